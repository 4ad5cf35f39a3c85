"""LoRA: Low-Rank Adaptation of Large Language Models.

Hu, Shen, Wallis, Allen-Zhu, Li, Wang, Wang, Chen. ICLR 2022. arXiv:2106.09685.
Reference implementation: https://github.com/microsoft/LoRA (loralib/layers.py).

Implements
  Eq. (3)  h = W0 x + ΔW x = W0 x + B A x, with W0 frozen, B ∈ R^{d×r}, A ∈ R^{r×k};
  §4.1     ΔW x scaled by α/r; B = 0 at init, so the adapted model starts equal to the base;
  §4.2     adapted matrices W_q and W_v only ("Applying LoRA to Transformer"), classifier trained;
  §4.2     merge: W = W0 + (α/r)·B A, no inference latency.

Symbols: r → r, α → alpha, W0 → base.weight, A → lora_A (r×k), B → lora_B (d×r).

Defaults: r = 8 and α = 8 on W_q, W_v for RoBERTa-base (Table 9, "LoRA Config. r_q = r_v = 8, α = 8").
Learning rate, batch size and epochs are per task in Table 9 and live in the grid
(workflows/grids/lora_roberta_base_glue.yaml), not here.

Deviations
  - A is initialised Kaiming-uniform (a = √5) as in loralib and PEFT; §4.1 of the paper says
    "random Gaussian". ``init_a="gaussian"`` gives N(0, 1/r²), PEFT's "gaussian" option.
  - target_modules matches by name suffix; the default covers BERT/RoBERTa (query, value) and
    Llama-style (q_proj, v_proj) names, i.e. the paper's W_q and W_v.
  - lora_dropout defaults to 0: Table 9 lists no LoRA dropout.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from adaptbench.protocol import Adapter, fold_wrapped_layers, freeze_all, replace_module, target_linears
from adaptbench.registry import Paper, register
from methods.adapters._layers import LowRankLinear


@dataclass(frozen=True)
class LoRAConfig:
    r: int = 8  # Table 9: r_q = r_v = 8 (search space in Table 18: 1..64)
    alpha: float = 8.0  # Table 9 (released scripts use 16)
    target_modules: tuple[str, ...] = ("query", "value", "q_proj", "v_proj")  # §4.2: W_q, W_v
    lora_dropout: float = 0.0  # not listed in Table 9
    init_a: str = "kaiming_uniform"  # loralib; "gaussian" = the paper's wording (§4.1)

    def __post_init__(self):
        if not (isinstance(self.r, int) and self.r >= 1):
            raise ValueError(f"lora: r must be a positive integer, got {self.r!r}")
        if not self.alpha > 0:
            raise ValueError(f"lora: alpha must be > 0, got {self.alpha!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora: lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if self.init_a not in ("kaiming_uniform", "gaussian"):
            raise ValueError(f"lora: init_a must be 'kaiming_uniform' or 'gaussian', got {self.init_a!r}")


# Eq. (3) with the §4.1 scaling is the family's neutral layer, y = W0 x + b + (α/r)·B A dropout(x), merged as
# W0 + (α/r)·B A (§4.2): LoRA's layer is LowRankLinear itself (methods/adapters/_layers.py).
LoRALinear = LowRankLinear


@register(
    family="adapter",
    paper=Paper(
        title="LoRA: Low-Rank Adaptation of Large Language Models",
        arxiv="2106.09685",
        year=2022,
        venue="ICLR",
        authors="Hu, Shen, Wallis, Allen-Zhu, Li, Wang, Wang, Chen",
        code="https://github.com/microsoft/LoRA",
    ),
    config=LoRAConfig,
    mergeable=True,
)
class LoRA(Adapter):
    TRAINABLE = ("*.lora_A", "*.lora_B")

    def apply(self, model: nn.Module) -> nn.Module:
        freeze_all(model)
        c = self.cfg
        for name, linear in target_linears(model, c.target_modules):
            replace_module(model, name, LoRALinear(linear, c.r, c.alpha, c.lora_dropout, c.init_a))
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        """Fold (α/r)·B A into W0 and put the plain nn.Linear back (§4.2)."""
        return fold_wrapped_layers(model, LoRALinear)
