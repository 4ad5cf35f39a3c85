"""SoMA: Singular Value Decomposed Minor Components Adaptation for Domain Generalizable Representation Learning.

Yun, Chae, Lee, Ro. arXiv:2412.04077 (v1 Dec 2024, first titled "SoRA: Singular Value Decomposed Low-Rank
Adaptation"). Reference implementation: https://github.com/ysj9909/SoMA@2bf0124 (rein/peft/sora.py, configs/sora/).

Implements
  abstract / sora.py  W = U S V^T; the r SMALLEST singular triplets initialise the trainable low-rank
                      adapter, A^T = S_min^{1/2} V_min^T, B^T = U_min S_min^{1/2} (PiSSA's factorisation at the
                      other end of the spectrum);
  abstract            the principal part W − B A (all larger components) stays frozen, so the model starts
                      equal to the base and merges back into plain weights ("no additional inference overhead");
  abstract            "freeze domain-generalizable blocks": adapters only in blocks >= start_block
                      (configs: start_lora_idx).

Symbols: r → r, α → alpha (scaling α/r as in sora.py), U_min S_min V_min^T → the last r triplets of
torch.linalg.svd(base.weight), principal residual → base.weight, first adapted block → start_block.
The SVD and the (A, B) factorisation are PiSSA's (_svd_math.svd / init_from_svd_, on _layers.LowRankLinear);
only the choice of triplets differs.

Defaults come from the official configs (configs/sora/sora_dinov2-L_mask2former*.py): rank 16, lora_alpha = rank,
dropout 0, targets q, k, v, proj, fc1, fc2 (every linear layer of a ViT block), biases of the adapted layers
trainable (SoraConfig bias="all"). The paper's numbers are for DINOv2-L / EVA02-L on segmentation and detection.

Deviations
  - Paper sections and tables could not be checked against the PDF here; defaults cite the released code.
  - start_block defaults to 0 (all blocks adapted): the configs freeze the first 8 of DINOv2-L's 24 blocks
    after a per-block analysis of that backbone; no value is published for text encoders. Set it in the grid.
  - The annealing weight-decay schedule is an optimizer schedule, not part of the adapter; it is not
    implemented here and the trainer's weight decay applies.
  - Exact SVD only: the code's "sora_niter_k" option calls a randomized SVD that returns the LARGEST
    triplets, i.e. not minor components, so it is left out.
  - target_modules adds BERT/RoBERTa names (query, key, value, and the three encoder "dense" layers) to the
    ViT names; layers outside numbered blocks (e.g. a pooler) are never adapted, as in sora.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from adaptbench.protocol import Adapter, fold_wrapped_layers, freeze_all, replace_module, target_linears
from adaptbench.registry import Paper, register
from methods.adapters._layers import LowRankLinear, check_rank
from methods.adapters._svd_math import init_from_svd_, svd

BLOCK_INDEX = re.compile(r"(?:^|\.)(?:blocks|layer|layers|h)\.(\d+)\.")  # ViT blocks.i / BERT layer.i / GPT h.i


@dataclass(frozen=True)
class SoMAConfig:
    r: int = 16  # configs/sora/*.py: rank = 16
    alpha: float = 16.0  # configs: lora_alpha = rank, i.e. scaling 1
    target_modules: tuple[str, ...] = (  # configs: all linear layers of a block (ViT/BERT names, then Llama's)
        "q", "k", "v", "proj", "fc1", "fc2", "query", "key", "value", "dense",
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    start_block: int = 0  # configs: start_lora_idx = 8 (DINOv2-L); 0 = adapt every block
    train_bias: bool = True  # SoraConfig bias="all": biases of adapted layers train

    def __post_init__(self):
        if not (isinstance(self.r, int) and self.r >= 1):
            raise ValueError(f"soma: r must be a positive integer, got {self.r!r}")
        if not self.alpha > 0:
            raise ValueError(f"soma: alpha must be > 0, got {self.alpha!r}")
        if not (isinstance(self.target_modules, tuple) and self.target_modules
                and all(isinstance(t, str) for t in self.target_modules)):
            raise ValueError(f"soma: target_modules must be a non-empty list of names, got {self.target_modules!r}")
        if not (isinstance(self.start_block, int) and self.start_block >= 0):
            raise ValueError(f"soma: start_block must be an integer >= 0, got {self.start_block!r}")
        if not isinstance(self.train_bias, bool):
            raise ValueError(f"soma: train_bias must be true or false, got {self.train_bias!r}")


def block_index(name: str) -> int | None:
    """Index of the transformer block a module lives in, or None outside the blocks."""
    match = BLOCK_INDEX.search(name)
    return int(match.group(1)) if match else None


@register(
    family="adapter",
    paper=Paper(
        title="SoMA: Singular Value Decomposed Minor Components Adaptation for Domain Generalizable "
              "Representation Learning",
        arxiv="2412.04077",
        year=2024,
        authors="Yun, Chae, Lee, Ro",
        code="https://github.com/ysj9909/SoMA@2bf0124",
    ),
    config=SoMAConfig,
    mergeable=True,
)
class SoMA(Adapter):
    TRAINABLE = ("*.lora_A", "*.lora_B", "*.base.bias")

    def __init__(self, cfg: SoMAConfig):
        super().__init__(cfg)
        if not cfg.train_bias:
            self.TRAINABLE = ("*.lora_A", "*.lora_B")

    def apply(self, model: nn.Module) -> nn.Module:
        freeze_all(model)
        c = self.cfg
        chosen = [(n, m) for n, m in target_linears(model, c.target_modules)
                  if (i := block_index(n)) is not None and i >= c.start_block]
        if not chosen:
            raise ValueError(f"soma: no target layer in a block >= start_block = {c.start_block}; lower start_block")
        for name, linear in chosen:
            check_rank("soma", c.r, name, linear)
            # A's Kaiming draw is overwritten below but kept: the RNG stream training continues from depends on it
            layer = LowRankLinear(linear, c.r, c.alpha, dropout=0.0, init_a="kaiming_uniform")
            U, S, Vh = svd(linear.weight, c.r)  # exact: all triplets, descending
            init_from_svd_(layer, U[:, -c.r:], S[-c.r:], Vh[-c.r:])  # minor: the r smallest
            if c.train_bias and linear.bias is not None:
                linear.bias.requires_grad_(True)
            replace_module(model, name, layer)
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        """Principal residual + s·B A folded into one plain nn.Linear per adapted layer."""
        return fold_wrapped_layers(model, LowRankLinear)
