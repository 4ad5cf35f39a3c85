"""IntTune (IntermediateTune): NLoRA with only the intermediate matrix trained, from
"NLoRA: Nyström-Initiated Low-Rank Adaptation for Large Language Models".

Guo, Chang, Wu. Findings of EMNLP 2025. arXiv:2502.14482.
Reference implementation: https://github.com/TracyGuo2001/NLoRA@b086286 (code/inttune.py sets
``lora_A.requires_grad = lora_B.requires_grad = False`` after building NLoRA; scripts/run_inttune.sh).

Implements
  §3 (IntTune)  NLoRA's Nyström init (B = C, N = U⁺/s, A = R; see nlora.py), then A and B frozen: only the
                r × r matrix N (and the task head) trains -- r² parameters per adapted layer;
  merge         W + s·B N A is a plain weight again.

Symbols: as nlora.py; N → lora_N (r × r; "M" in the brief/catalog).

Defaults: r = α = 8, every block linear, sketch = first r indices, no residual -- as nlora.py, whose sources
apply. The abstract's "1.25% of [LoRA's] parameters" is r²/(r·(in+out)) averaged over the adapted layers; for
LLaMA-2-7B at r = 128 on all seven matrices the formula gives 1.15%, so that figure's exact setting is unknown.

Deviations: those of nlora.py (paper body unavailable; N = U⁺ rather than the released code's U; N divided
by s; no dropout).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from adaptbench.protocol import Adapter
from adaptbench.registry import register
from methods.adapters._nlora_math import (ALL_BLOCK_LINEARS, PAPER, SKETCHES, ThreeFactorLinear, apply_nystrom,
                                          check_common, merge_layers)


@dataclass(frozen=True)
class IntTuneConfig:
    r: int = 8  # authors' inttune.py default
    alpha: float = 8.0  # authors' inttune.py default
    target_modules: tuple[str, ...] = ALL_BLOCK_LINEARS  # inttune.py default: q, v, k, o, gate, down, up
    sketch: str = "first_r"  # as nlora.py
    residual: bool = False  # as nlora.py (released code: no residual)

    def __post_init__(self):
        check_common("inttune", self.r, self.alpha, self.target_modules)
        if self.sketch not in SKETCHES:
            raise ValueError(f"inttune: sketch must be one of {SKETCHES}, got {self.sketch!r}")
        if not isinstance(self.residual, bool):
            raise ValueError(f"inttune: residual must be true or false, got {self.residual!r}")


@register(family="adapter", paper=PAPER, config=IntTuneConfig, mergeable=True)
class IntTune(Adapter):
    TRAINABLE = ("*.lora_N",)
    IDENTITY_AT_INIT = False  # NLoRA's init without residual, as the released code

    def apply(self, model: nn.Module) -> nn.Module:
        apply_nystrom("inttune", self.cfg, model)
        for module in model.modules():
            if isinstance(module, ThreeFactorLinear):
                module.lora_A.requires_grad_(False)  # inttune.py: only the r × r matrix is tuned
                module.lora_B.requires_grad_(False)
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        return merge_layers(model)
