"""SLoRA (StructuredLoRA): LoRA with a small trainable intermediate matrix, from
"NLoRA: Nyström-Initiated Low-Rank Adaptation for Large Language Models".

Guo, Chang, Wu. Findings of EMNLP 2025. arXiv:2502.14482.
Reference implementation: https://github.com/TracyGuo2001/NLoRA@b086286 (a PEFT fork; ``init_lora_weights="s_lora"``,
``LoraLayer.slora_init`` and ``Linear.forward`` in peft/src/peft/tuners/lora/layer.py).

Implements
  §3 (SLoRA)  h = W x + s · B N A x: an r × r intermediate matrix N between LoRA's two factors, all three trained,
              W frozen;
  init        A, N Kaiming-uniform, B = 0 (released slora_init; the README: "the intermediate matrix is Kaiming
              initialized by default"), so the adapted model starts equal to the base;
  merge       W + s·B N A is a plain weight again, no inference latency.

Symbols (nn.Linear layout, weight = out × in; the paper writes Y = X W, so its A·N·B is our (B N A)ᵀ):
  A → lora_A (r × in), N → lora_N (r × r; the brief and methods-catalog call it M), B → lora_B (out × r),
  r → r, α → alpha, s = α/r.

Defaults: r = α = 8 (authors' inttune.py defaults ``lora_rank = lora_alpha = 8``, the GLUE-scale setting);
the NLG scripts use r = α = 128 on q, k, v, o, gate, up, down of LLaMA-2-7B (scripts/run_nlora.sh) -- set in the
grid. Targets: every linear layer of a block, as run_nlora.sh.
Parameter count: r·(in + out) + r² per adapted layer, i.e. LoRA + r². The abstract's "3.67M additional
trainable parameters" is exactly 32 layers × 7 matrices × 128² = 3,670,016 (checked in the tests).

Deviations
  - The paper's body (its §3 equations) was not available to us; structure and init follow the released code and
    README. No equation numbers are cited for that reason.
  - No LoRA dropout (the released scripts use lora_dropout = 0, and the fork's three-matrix path skips it).
  - target_modules matches by name suffix (PEFT's rule); ALL_BLOCK_LINEARS maps "q, k, v, o, gate, up, down" to
    BERT/RoBERTa/DeBERTa names too.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from adaptbench.protocol import Adapter, freeze_all, replace_module, target_linears
from adaptbench.registry import register
from methods.adapters._layers import check_rank
from methods.adapters._nlora_math import (ALL_BLOCK_LINEARS, PAPER, ThreeFactorLinear, check_common, init_kaiming_zero_,
                                          merge_layers)


@dataclass(frozen=True)
class SLoRAConfig:
    r: int = 8  # authors' inttune.py default (NLG scripts: 128)
    alpha: float = 8.0  # authors' inttune.py default; scripts keep α = r (s = 1)
    target_modules: tuple[str, ...] = ALL_BLOCK_LINEARS  # run_nlora.sh: q, k, v, o, gate, up, down

    def __post_init__(self):
        check_common("slora", self.r, self.alpha, self.target_modules)


@register(family="adapter", paper=PAPER, config=SLoRAConfig, mergeable=True)
class SLoRA(Adapter):
    TRAINABLE = ("*.lora_A", "*.lora_N", "*.lora_B")

    def apply(self, model: nn.Module) -> nn.Module:
        freeze_all(model)
        c = self.cfg
        for name, linear in target_linears(model, c.target_modules):
            check_rank("slora", c.r, name, linear)
            layer = ThreeFactorLinear(linear, c.r, c.alpha)
            init_kaiming_zero_(layer)
            replace_module(model, name, layer)
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        return merge_layers(model)
