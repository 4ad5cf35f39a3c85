"""Family protocols. A method class implements only its family's hooks; the trainer owns the rest.

Adapter (methods/adapters/): ``apply(model) -> model`` freezes what the paper freezes and wraps the
target layers; data-driven initialisations (EVA, CorDA) set ``DATA_DRIVEN`` and split ``prepare`` into
``init_state(model, batches) -> dict`` (the expensive, cacheable part: a workflow step stores it per
model × task × seed) and ``load_init_state(model, state)``;
``on_step(model, step, total_steps)`` for schedules (rank sampling, budget allocation, freezing),
``extra_loss(model)`` for regularisers and ``merge(model)`` where the update folds into plain
weights. The task head (a new classifier) always trains; the trainer unfreezes it after ``apply``.

Optimizer (methods/optimizers/): ``build(named_params, lr, weight_decay) -> torch.optim.Optimizer``;
optional ``prepare_model(model) -> model`` for methods that re-parameterise the weights they train
(SLTrain's low-rank + sparse weights, GradNormLoRP's weight normalisation), applied after the adapter.
The trainer records ``optimizer_state_bytes`` for every run (GaLore-style claims are about it).
TTA (methods/tta/): ``configure_model``, ``params_to_adapt``, ``forward_and_adapt(inputs) -> logits``;
the base builds the optimizer over ``params_to_adapt`` (from ``TTAOptimConfig``, which the config of every
method that adapts by backprop inherits) and snapshots model and optimizer, so ``reset`` needs no method code
beyond ``reset_state`` for the method's own buffers (EMA teacher, memory bank); optional hooks
``prepare_source`` (before ``attach``) and ``prepare_fisher`` (after it) take clean source batches.
A TTA model maps ``inputs`` (a tensor, or a dict of tensors for text) to logits, and exposes
``features(inputs) -> (B, D)`` and ``classifier`` with ``model(x) == model.classifier(model.features(x))``.
Continual (methods/continual/): ``learn_task(model, task_id, batches)``, ``predict(model, x, task_id)``.
The families' runners (TTA streams, continual sequences) arrive with their issues.
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass

import torch
from torch import nn


class Adapter:
    """Base for adapter methods. Subclasses set TRAINABLE: fnmatch patterns of the parameter names
    (outside the task head) that must receive gradients, used by the shared invariant tests."""

    TRAINABLE: tuple[str, ...] = ()
    TEST_LR: float = 1e-2  # a learning rate at which one step visibly moves a tiny model
    IDENTITY_AT_INIT: bool = True  # the adapted model computes what the base computes, before any step
    LIBRARY_LAYERS: bool = False  # True: wraps a library's own layers (PEFT), not methods/adapters/_layers

    def __init__(self, cfg):
        self.cfg = cfg

    def apply(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError

    DATA_DRIVEN: bool = False  # True: prepare() computes an initialisation from training batches

    def prepare(self, model: nn.Module, batches) -> None:
        """Data-driven initialisation from a few training batches (default: nothing)."""
        if self.DATA_DRIVEN:
            self.load_init_state(model, self.init_state(model, batches))

    def init_state(self, model: nn.Module, batches) -> dict[str, torch.Tensor]:
        """The data-dependent part of the initialisation, as tensors (cached by the workflow)."""
        raise NotImplementedError

    def load_init_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    # Step hooks, called by the training loop in this order around every optimizer step. Each may
    # return a dict of scalars (rank sampled, budget left, layers frozen ...) that the loop logs into
    # train_info["hooks"], DomainBed-style; None logs nothing.
    def before_step(self, model: nn.Module, step: int, total_steps: int) -> dict[str, float] | None:
        """Before the forward pass of step ``step`` (DyLoRA samples this step's rank here)."""
        return None

    def on_gradients(self, model: nn.Module, step: int, total_steps: int) -> dict[str, float] | None:
        """After backward and clipping, before ``optimizer.step()``: the gradients are still there
        (AdaLoRA's sensitivity |w·∇w|)."""
        return None

    def on_step(self, model: nn.Module, step: int, total_steps: int) -> dict[str, float] | None:
        """After ``optimizer.step()`` and ``zero_grad`` (freezing schedules, rank budgets)."""
        return None

    def state_dict(self) -> dict:
        """The method's own mutable state beyond the model's tensors (a schedule's counters, an RNG),
        saved in resumable checkpoints; default: none."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned, on resume."""

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        return None

    def merge(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} has no mergeable form")


def freeze_all(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def target_linears(model: nn.Module, target_modules) -> list[tuple[str, nn.Linear]]:
    """Linear layers whose qualified name ends with one of ``target_modules`` (PEFT's suffix rule)."""
    found = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and any(name == t or name.endswith("." + t) for t in target_modules)
    ]
    if not found:
        raise ValueError(f"target_modules {list(target_modules)} match no nn.Linear in {type(model).__name__}")
    return found


def replace_module(model: nn.Module, qualified_name: str, new: nn.Module) -> None:
    parent_name, _, child = qualified_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


class OptimizerMethod:
    """Base for optimizer methods: a grid axis like any adapter."""

    def __init__(self, cfg):
        self.cfg = cfg

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Re-parameterise the model before ``build`` (default: unchanged)."""
        return model

    def build(self, named_params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        raise NotImplementedError


TTA_OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class TTAOptimConfig:
    """The optimizer fields of every TTA config that adapts by backprop (Tent, EATA/ETA, SAR, CoTTA): the method's
    config inherits them (dataclass inheritance) and overrides the defaults with its paper's setting, citing it.
    ``TTAMethod.make_optimizer`` builds torch SGD(lr, momentum, weight_decay) or Adam(lr, betas=(beta, 0.999),
    weight_decay) from them. A method that adapts nothing by backprop (source, bn_adapt, adanpc) does not inherit
    them and gets no optimizer. A subclass with its own ``__post_init__`` calls ``super().__post_init__()``."""

    optimizer: str = "sgd"  # one of TTA_OPTIMIZERS
    lr: float = 1e-3
    momentum: float = 0.9  # SGD momentum (unused by Adam)
    weight_decay: float = 0.0
    beta: float = 0.9  # Adam β1 (unused by SGD); β2 = 0.999

    @property
    def method_name(self) -> str:
        """The name errors start with: the class name less "Config", lower case (TentConfig -> "tent")."""
        return type(self).__name__.removesuffix("Config").lower()

    def __post_init__(self):
        name = self.method_name
        if self.optimizer not in TTA_OPTIMIZERS:
            raise ValueError(f"{name}: optimizer must be one of {TTA_OPTIMIZERS}, got {self.optimizer!r}")
        if not self.lr > 0:
            raise ValueError(f"{name}: lr must be > 0, got {self.lr!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"{name}: momentum must be in [0, 1), got {self.momentum!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"{name}: weight_decay must be >= 0, got {self.weight_decay!r}")
        if not 0 <= self.beta < 1:
            raise ValueError(f"{name}: beta must be in [0, 1) (Adam β1), got {self.beta!r}")


class TTAMethod:
    """Base for test-time adaptation: one small class per method (Tent, EATA, SAR, ...).

    ``attach(model)`` configures the model, builds the optimizer over ``params_to_adapt`` from the config's
    ``TTAOptimConfig`` fields (no optimizer when the config does not inherit them: the method adapts nothing by
    backprop), and snapshots both; ``reset()`` restores them and calls ``reset_state()``. A method implements
    ``configure_model``, ``params_to_adapt`` and ``forward_and_adapt(inputs) -> logits`` (predictions for the
    batch, made before or after its update as the paper specifies); ``last_stats`` holds the step's numbers
    (e.g. samples kept). The stream runner calls, in this order: ``prepare_source(model, source_batches)``,
    ``attach(model)``, ``prepare_fisher(source_batches)``, then ``forward_and_adapt`` per test batch."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.model: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.last_stats: dict[str, float] = {}
        self._source_state: dict | None = None
        self._optimizer_state: dict | None = None

    def prepare_source(self, model: nn.Module, source_batches) -> None:
        """Source-side statistics from clean source data, before ``attach``. The runner
        (adaptbench/tta/streams.py ``prepare_before_attach``) calls it once per stream with the source model as
        trained (not yet configured) and clean labelled source batches, each ``(inputs, labels)`` or a dict of
        model inputs holding ``labels``: AdaNPC's feature memory, the Label Shift Adapter's hypernetwork.
        Default: nothing."""

    def prepare_fisher(self, batches) -> None:
        """Statistics of the configured model on clean samples, after ``attach`` and before the first test batch:
        EATA's Fisher information ω (Eq. 9) from clean samples. The runner (``prepare_after_attach``) passes the
        clean source batches it gave ``prepare_source``, as ``(inputs, labels)`` pairs (the labels may be
        ignored). Default: nothing."""

    def configure_model(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError

    def params_to_adapt(self, model: nn.Module) -> list[nn.Parameter]:
        raise NotImplementedError

    def forward_and_adapt(self, inputs) -> torch.Tensor:
        raise NotImplementedError

    def reset_state(self) -> None:
        """Restore the method's own buffers (teacher, memory, moving averages); default: none."""

    def make_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer | None:
        """SGD or Adam over ``params`` from the config's TTAOptimConfig fields; None for a config without them
        (the method adapts nothing by backprop, or a base method it wraps owns the optimizer)."""
        cfg = self.cfg
        if not isinstance(cfg, TTAOptimConfig):
            return None
        if not params:
            raise ValueError(f"{cfg.method_name}: params_to_adapt returned no parameters for the {cfg.optimizer} "
                             "optimizer; the model has nothing this method adapts")
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta, 0.999), weight_decay=cfg.weight_decay)

    def attach(self, model: nn.Module) -> None:
        self.model = self.configure_model(model)
        self.optimizer = self.make_optimizer(list(self.params_to_adapt(self.model)))
        self._source_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self._optimizer_state = copy.deepcopy(self.optimizer.state_dict()) if self.optimizer else None

    def reset(self) -> None:
        if self.model is None or self._source_state is None:
            raise RuntimeError("reset() before attach(model)")
        self.model.load_state_dict(self._source_state)
        if self.optimizer is not None:
            self.optimizer.load_state_dict(copy.deepcopy(self._optimizer_state))
        self.reset_state()


class ContinualMethod:
    """Base for continual-learning routines; the sequence runner records the accuracy matrix."""

    def __init__(self, cfg):
        self.cfg = cfg

    def learn_task(self, model: nn.Module, task_id: int, batches) -> dict[str, float]:
        raise NotImplementedError

    def predict(self, model: nn.Module, x, task_id: int | None = None) -> torch.Tensor:
        raise NotImplementedError


def fold_wrapped_layers(model: nn.Module, layer_type: type) -> nn.Module:
    """Merge: every ``layer_type`` wrapper becomes the plain nn.Linear its ``merged_linear()`` returns."""
    for name, module in list(model.named_modules()):
        if isinstance(module, layer_type):
            replace_module(model, name, module.merged_linear())
    return model


def decay_groups(named_params, weight_decay: float) -> list[dict]:
    """Parameter groups with weight decay on matrices only: no decay on biases and LayerNorm weights
    (the BERT/RoBERTa fine-tuning convention), so optimizers differ only in their update rule."""
    decay, no_decay = [], []
    for name, p in named_params:
        (no_decay if p.ndim < 2 or "layernorm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in the optimizer's per-parameter state (Adam's m and v, projections, ...)."""
    return sum(t.numel() * t.element_size() for state in optimizer.state.values()
               for t in state.values() if torch.is_tensor(t))
