"""Tent: Fully Test-Time Adaptation by Entropy Minimization.

Wang, Shelhamer, Liu, Olshausen, Darrell. ICLR 2021. arXiv:2006.10726.
Reference implementation: https://github.com/DequanWang/tent (tent.py @ 7d236b4).

Implements
  §3 objective:   H(ŷ) = −Σ_c p(ŷ_c)·log p(ŷ_c), averaged over the test batch            -> softmax_entropy
  §3 modulation:  normalisation statistics μ, σ estimated on the test batch; only the channel-wise affine
                  γ, β of the normalisation layers are optimised       -> configure_norm_adaptation, norm_affine_params
  §3 algorithm:   one gradient step per test batch; the batch is predicted by the forward pass that computes
                  the loss, i.e. before the update (reference ``forward_and_adapt`` returns those outputs).
  EATA, ETA, SAR and the open-set filter (owc) build on these helpers, as their reference code builds on Tent's.

Symbols: ŷ → logits, p(ŷ_c) → softmax(logits), γ / β → norm ``weight`` / ``bias``, μ / σ → batch statistics.

Defaults: §4 (ImageNet-C, the paper's headline setting; quoted by the authors in DequanWang/tent#4 and used for
Tent by the EATA and SAR reference scripts): SGD, momentum 0.9, lr 0.00025 at batch size 64, one step per batch.
For CIFAR/digits the paper uses Adam, lr 0.001 at batch size 128 (reference cfgs/tent.yaml: Adam 1e-3, bs 200);
a grid sets ``optimizer: adam, lr: 0.001`` for that recipe and scales lr linearly with batch size.

Deviations
  - LayerNorm and GroupNorm affine parameters are adapted besides BatchNorm (the reference collects BatchNorm2d
    only); this follows mariodoebler/test-time-adaptation and SAR and is what lets Tent run on LN transformers.
  - The model is put in eval mode (dropout off) with BatchNorm forced to test-batch statistics, instead of
    ``model.train()``: identical for the dropout-free CNNs of the paper, and keeps an encoder's dropout from
    perturbing the predictions (mariodoebler does the same).
  - ``forward_and_adapt(inputs, select=...)`` accepts an optional sample mask so that plug-in filters (owc) can
    restrict the loss; without it every sample contributes, as in the paper. An empty selection takes no step.
  - Equation numbers are not quoted: the paper text was not available here, so sections are cited instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from adaptbench.protocol import TTAMethod, TTAOptimConfig, matches
from adaptbench.registry import Paper, register

NORM_TYPES = (_BatchNorm, nn.LayerNorm, nn.GroupNorm)


@dataclass(frozen=True)
class TentConfig(TTAOptimConfig):
    """Only the optimizer (TTAOptimConfig, validated there), at the paper's settings."""

    optimizer: str = "sgd"  # §4 ImageNet: SGD with momentum (CIFAR/digits: "adam")
    lr: float = 0.00025  # §4 ImageNet at batch size 64 (CIFAR: 0.001 with Adam at bs 128); scale with batch size
    momentum: float = 0.9  # §4 SGD momentum
    weight_decay: float = 0.0  # reference cfgs: OPTIM.WD 0
    beta: float = 0.9  # Adam β1 when optimizer == "adam" (reference conf.py OPTIM.BETA)


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """§3: H(ŷ) = −Σ_c p(ŷ_c) log p(ŷ_c) per sample. logits (B, C) -> (B,), in nats."""
    return -(logits.softmax(1) * logits.log_softmax(1)).sum(1)


def max_entropy(num_classes: int) -> float:
    """ln C, the entropy of the uniform prediction: the scale EATA's E0 and SAR's thresholds are given in."""
    return math.log(num_classes)


def norm_affine_params(model: nn.Module, exclude=()) -> list[tuple[str, nn.Parameter]]:
    """§3: the affine γ (weight) and β (bias) of every BatchNorm/LayerNorm/GroupNorm, in module order,
    skipping modules whose qualified name matches an fnmatch pattern in ``exclude``."""
    found = []
    for module_name, module in model.named_modules():
        if isinstance(module, NORM_TYPES) and not matches(module_name, exclude):
            for pname in ("weight", "bias"):
                p = getattr(module, pname, None)
                if isinstance(p, nn.Parameter):
                    found.append((f"{module_name}.{pname}" if module_name else pname, p))
    return found


def configure_norm_adaptation(model: nn.Module, method: str, exclude=()) -> nn.Module:
    """§3: eval mode (dropout off), every parameter frozen except the norm affine ones, and every BatchNorm
    normalising with the statistics of the current test batch (running statistics removed, as the reference)."""
    model.eval()
    model.requires_grad_(False)
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.track_running_stats = False
            module.running_mean = None
            module.running_var = None
    params = norm_affine_params(model, exclude)
    if not params:
        raise ValueError(f"{method}: the model has no BatchNorm/LayerNorm/GroupNorm affine parameters to adapt "
                         f"(exclude={tuple(exclude)!r}); use bn_adapt or source for such a model")
    for _, p in params:
        p.requires_grad_(True)
    return model


Select = Callable[[torch.Tensor], torch.Tensor]  # logits (B, C) -> bool mask (B,)


@register(
    family="tta",
    paper=Paper(
        title="Tent: Fully Test-Time Adaptation by Entropy Minimization",
        arxiv="2006.10726",
        year=2021,
        venue="ICLR",
        authors="Wang, Shelhamer, Liu, Olshausen, Darrell",
        code="https://github.com/DequanWang/tent@7d236b4",
    ),
    config=TentConfig,
)
class Tent(TTAMethod):
    """Entropy minimisation on the normalisation layers' affine parameters, one step per test batch."""

    def configure_model(self, model: nn.Module) -> nn.Module:
        return configure_norm_adaptation(model, "tent")

    def params_to_adapt(self, model: nn.Module) -> list[nn.Parameter]:
        return [p for _, p in norm_affine_params(model)]

    @torch.enable_grad()
    def forward_and_adapt(self, inputs, select: Select | None = None) -> torch.Tensor:
        logits = self.model(inputs)  # (B, C): the batch's predictions, made before the update
        entropy = softmax_entropy(logits)  # (B,)
        keep = torch.ones_like(entropy, dtype=torch.bool) if select is None else select(logits)
        loss = float("nan")
        if keep.any():
            objective = entropy[keep].mean()
            self.optimizer.zero_grad()
            objective.backward()
            self.optimizer.step()
            loss = objective.item()
        self.last_stats = {"loss": loss, "kept": float(keep.sum())}
        return logits.detach()
