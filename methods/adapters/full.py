"""Full fine-tuning: every pretrained weight is trained. The reference row of every PEFT table.

As configured in LoRA's Table 2 baseline ("FT", taken from Liu et al. 2019, RoBERTa:
arXiv:1907.11692): all parameters updated with AdamW. The optimizer, learning rate and schedule are
training settings in the grid; this method only decides what trains, which is everything.

Deviations: none; there is no method hyperparameter.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from adaptbench.protocol import Adapter
from adaptbench.registry import Paper, register


@dataclass(frozen=True)
class FullConfig:
    pass


@register(
    family="adapter",
    paper=Paper(
        title="RoBERTa: A Robustly Optimized BERT Pretraining Approach (full fine-tuning baseline)",
        arxiv="1907.11692",
        year=2019,
        venue="arXiv",
        authors="Liu, Ott, Goyal, Du, Joshi, Chen, Levy, Lewis, Zettlemoyer, Stoyanov",
    ),
    config=FullConfig,
    mergeable=True,
)
class Full(Adapter):
    TRAINABLE = ("*",)

    def apply(self, model: nn.Module) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        return model  # the trained weights already are the plain weights
