"""Building a run: seed, device, memory probe, model with its method applied, optimizer, schedule.

Shared by every track's job; no training loop here (``loop.py``) and no evaluation (``evaluate.py``).
"""

from __future__ import annotations

import random
import sys
import resource

import numpy as np
import torch

from adaptbench import models, tasks
from adaptbench.config import TrainConfig
from adaptbench.protocol import decay_groups
from adaptbench.registry import get_method


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # torch.use_deterministic_algorithms(True, warn_only=True) sets this flag, and imports torch._inductor
    # to set its `deterministic` option too: 1.9 s of every job's start-up, for a compiler we never call.
    # The flag is what eager kernels read; the compiler's option is set where it is already loaded.
    torch._C._set_deterministic_algorithms(True, warn_only=True)
    if "torch._inductor.config" in sys.modules:
        sys.modules["torch._inductor.config"].deterministic = True


def pick_device(requested: str | None = None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def optimizer_method(cfg: TrainConfig):
    """The registered optimizer method named by ``train.optimizer``, or None for the AdamW baseline."""
    if cfg.optimizer == "adamw":
        return None
    spec = get_method(cfg.optimizer)
    if spec.family != "optimizer":
        raise ValueError(f"train.optimizer: '{cfg.optimizer}' belongs to the {spec.family} family, not to the optimizers")
    return spec.build(cfg.optimizer_params)


def build_optimizer(model, cfg: TrainConfig, opt_method=None) -> torch.optim.Optimizer:
    """AdamW by default, or a registered optimizer method (``train.optimizer``); for AdamW, no weight
    decay on biases and LayerNorm weights (BERT/RoBERTa convention)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if opt_method is None and cfg.optimizer != "adamw":
        opt_method = optimizer_method(cfg)
    if opt_method is not None:
        return opt_method.build(named, cfg.lr, cfg.weight_decay)
    return torch.optim.AdamW(decay_groups(named, cfg.weight_decay), lr=cfg.lr)


def linear_warmup_decay(optimizer, warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def trainable_state(model, names: set[str] | None = None) -> dict[str, torch.Tensor]:
    """The tensors a run trains. ``names`` is taken before training: layer-sampling optimizers (LISA,
    OwLore) switch requires_grad on and off, and a layer frozen at the last step still trained."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters()
            if (p.requires_grad if names is None else n in names)}


def build_model(method_name: str, method_params: dict, model_name: str, spec: tasks.TaskSpec, seed: int,
                opt_method=None):
    """Model with the method applied (then the optimizer's re-parameterisation, if any) and the task
    head trainable; same seed → same initial weights."""
    method = get_method(method_name).build(method_params)
    torch.manual_seed(seed)
    loaded = models.load_for_classification(model_name, spec.num_labels, spec.kind == "regression", seed=seed)
    model = method.apply(loaded.model)
    if opt_method is not None:
        model = opt_method.prepare_model(model)
    for name, p in model.named_parameters():
        if name.startswith(models.HEAD_PREFIXES):
            p.requires_grad_(True)
    return method, model, loaded
