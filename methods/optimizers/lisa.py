"""LISA: Layerwise Importance Sampling for Memory-Efficient Large Language Model Fine-Tuning.

Pan, Liu, Diao, Pi, Zhang, Han, Zhang. NeurIPS 2024. arXiv:2403.17919.
Reference implementation: https://github.com/OptimalScale/LMFlow
(DynamicLayerActivationCallback, ``--lisa_activated_layers``, ``--lisa_interval_steps``).

Implements (Alg. 1, "Layerwise Importance Sampling AdamW")
  Sampling probabilities  p_ℓ = 1 for the embedding and the head (every parameter outside the numbered
                          layers, as in LMFlow), p_ℓ = γ/N_L for each of the N_L middle layers.
  Every K steps           freeze all middle layers (requires_grad = False: no gradient is computed) and
                          unfreeze γ of them drawn uniformly without replacement; then AdamW for K steps
                          on the active parameters (frozen ones have no gradient, so they neither move
                          nor decay).
  A layer's index is parsed from parameter names (``encoder.layer.3.``, ``model.layers.3.``,
  ``transformer.h.3.``), so adapters applied before the optimizer (LoRA, …) are sampled with their layer.

Symbols: γ → gamma, K → period, N_L → the number of distinct layer indices found, p_ℓ → γ/N_L.

Defaults: γ = 2 (the paper's main setting; its ablation covers γ ∈ {2, 4, 8}), K = 20 (LMFlow's documented
``--lisa_interval_steps 20``; the ablation covers K ∈ {13, 25, 122} on Alpaca-GPT4). These values come from
the reference code and summaries of the paper (claims/ and methods-catalog in shared/reference); the
paper's section and table numbers were not checked against its text here.

Deviations
  - γ layers are drawn without replacement (LMFlow), not by an independent draw per layer ("freeze ℓ if
    U(0, 1) > p_ℓ", Alg. 1 as summarised; not re-checked against the text here); each layer's marginal
    probability is γ/N_L either way, and exactly γ are active.
  - AdamW state of a layer is released when it is frozen, so memory stays at embeddings + head + γ
    layers (the paper's memory claim; Alg. 1 runs AdamW for K steps per period on the active set).
    LMFlow's single Trainer optimizer keeps it; ``keep_frozen_state=True`` does the same.
  - The sampling RNG is a private torch.Generator seeded from torch.initial_seed() (the run's seed set
    by the trainer), so dropout and data order are untouched. Its state, the step count and the active
    layers are part of ``state_dict()``, so a resumed run samples what the uninterrupted one would.
  - Weight decay skips biases and LayerNorm weights (protocol.decay_groups), as the AdamW baseline does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from adaptbench.protocol import OptimizerMethod, decay_groups
from adaptbench.registry import Paper, register


@dataclass(frozen=True)
class LISAConfig:
    gamma: int = 2  # γ, sampled middle layers (main setting; ablation {2, 4, 8})
    period: int = 20  # K, steps between re-sampling (LMFlow --lisa_interval_steps 20)
    layer_pattern: str = r"(?:^|\.)(?:layer|layers|h|blocks)\.(\d+)\."  # group 1 = layer index
    keep_frozen_state: bool = False  # True: keep AdamW moments of frozen layers (LMFlow's Trainer)

    def __post_init__(self):
        for name in ("gamma", "period"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"lisa: {name} must be a positive integer, got {getattr(self, name)!r}")
        try:
            if re.compile(self.layer_pattern).groups != 1:
                raise ValueError(f"lisa: layer_pattern must have exactly one group (the layer index), "
                                 f"got {self.layer_pattern!r}")
        except re.error as e:
            raise ValueError(f"lisa: layer_pattern is not a regular expression ({e}): {self.layer_pattern!r}") from None
        if not isinstance(self.keep_frozen_state, bool):
            raise ValueError(f"lisa: keep_frozen_state must be true or false, got {self.keep_frozen_state!r}")


def layer_index(name: str, pattern: str) -> int | None:
    """The middle-layer index in a parameter name (``bert.encoder.layer.3.…`` → 3), None outside layers."""
    found = re.search(pattern, name)
    return int(found.group(1)) if found else None


def sample_layers(n_layers: int, gamma: int, generator: torch.Generator) -> list[int]:
    """Alg. 1: γ of N_L layer positions uniformly without replacement (each with probability γ/N_L)."""
    return sorted(torch.randperm(n_layers, generator=generator)[:gamma].tolist())


class LISAAdamW(torch.optim.AdamW):
    """torch AdamW over every parameter; only the sampled layers (and all non-layer ones) get gradients."""

    def __init__(self, params, layers: dict[int, list[torch.nn.Parameter]], gamma: int, period: int,
                 keep_frozen_state: bool = False, generator: torch.Generator | None = None, **adamw):
        if gamma > len(layers):
            raise ValueError(f"lisa: gamma={gamma} exceeds the {len(layers)} layers found; lower gamma")
        super().__init__(params, **adamw)
        self.layers = [layers[k] for k in sorted(layers)]
        self.gamma, self.period, self.keep_frozen_state = gamma, period, keep_frozen_state
        self.generator = generator or torch.Generator().manual_seed(torch.initial_seed())
        self.steps, self.active = 0, []
        self.resample()

    def resample(self) -> None:
        """Freeze every middle layer, then unfreeze γ sampled ones (frozen: no grad, no state)."""
        self.activate(sample_layers(len(self.layers), self.gamma, self.generator))

    def activate(self, active: list[int]) -> None:
        """Train the layers at positions ``active``; freeze the others and drop their grad (and state)."""
        self.active = list(active)
        for position, params in enumerate(self.layers):
            on = position in self.active
            for p in params:
                p.requires_grad_(on)
                if not on:
                    p.grad = None
                    if not self.keep_frozen_state:
                        self.state.pop(p, None)

    def state_dict(self) -> dict:
        """AdamW's state plus the sampler's (steps taken, generator, active layers), so that a resumed run
        samples the same layers at the same steps as an uninterrupted one."""
        state = super().state_dict()
        state["sampler"] = {"steps": self.steps, "active": list(self.active), "generator": self.generator.get_state()}
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        sampler = state_dict.pop("sampler", None)
        super().load_state_dict(state_dict)
        if sampler is not None:
            self.steps = sampler["steps"]
            self.generator.set_state(sampler["generator"])
            self.activate(sampler["active"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = super().step(closure)
        self.steps += 1
        if self.steps % self.period == 0:
            self.resample()
        return loss


@register(
    family="optimizer",
    paper=Paper(
        title="LISA: Layerwise Importance Sampling for Memory-Efficient Large Language Model Fine-Tuning",
        arxiv="2403.17919",
        year=2024,
        venue="NeurIPS",
        authors="Pan, Liu, Diao, Pi, Zhang, Han, Zhang",
        code="https://github.com/OptimalScale/LMFlow",
    ),
    config=LISAConfig,
)
class LISA(OptimizerMethod):
    # Contract test only (tests/methods/test_optimizer_contract.py): on its 2-layer model, one layer frozen and a
    # fresh draw every step, so that the frozen-layer and resume checks see the sampling at work.
    TEST_OVERRIDES = {"gamma": 1, "period": 1}

    def build(self, named_params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        named = list(named_params)
        layers: dict[int, list[torch.nn.Parameter]] = {}
        for name, p in named:
            index = layer_index(name, self.cfg.layer_pattern)
            if index is not None:
                layers.setdefault(index, []).append(p)
        if not layers:
            raise ValueError(f"lisa: no parameter name matches layer_pattern {self.cfg.layer_pattern!r} "
                             f"(e.g. 'encoder.layer.3.'); set layer_pattern for this model")
        return LISAAdamW(decay_groups(named, weight_decay), layers, self.cfg.gamma, self.cfg.period,
                         self.cfg.keep_frozen_state, lr=lr, weight_decay=weight_decay)
