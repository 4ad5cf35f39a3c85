"""Family protocols. A method class implements only its family's hooks; the trainer owns the rest.

Adapter (methods/adapters/): ``apply(model) -> model`` freezes what the paper freezes and wraps the
target layers; optional ``prepare(model, batches)`` for data-driven initialisations,
``on_step(model, step, total_steps)`` for schedules (rank sampling, budget allocation, freezing),
``extra_loss(model)`` for regularisers and ``merge(model)`` where the update folds into plain
weights. The task head (a new classifier) always trains; the trainer unfreezes it after ``apply``.

Optimizer, TTA and continual protocols are added by the issues that bring those families.
"""

from __future__ import annotations

import fnmatch

import torch
from torch import nn


class Adapter:
    """Base for adapter methods. Subclasses set TRAINABLE: fnmatch patterns of the parameter names
    (outside the task head) that must receive gradients, used by the shared invariant tests."""

    TRAINABLE: tuple[str, ...] = ()
    TEST_LR: float = 1e-2  # a learning rate at which one step visibly moves a tiny model

    def __init__(self, cfg):
        self.cfg = cfg

    def apply(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError

    def prepare(self, model: nn.Module, batches) -> None:
        """Data-driven initialisation from a few training batches (default: nothing)."""

    def on_step(self, model: nn.Module, step: int, total_steps: int) -> None:
        """Called after each optimizer step (default: nothing)."""

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
