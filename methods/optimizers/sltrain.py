"""SLTrain: a sparse plus low-rank approach for parameter and memory efficient pretraining.

Han, Li, Huang, Hong, Takeda, Jawanpuria, Mishra. NeurIPS 2024. arXiv:2406.02214.
Reference implementation: https://github.com/andyjm3/SLTrain
(splora/splora_linear.py, splora_model.py, scripts/llm_pretrain/*.sh @ec9894b).

Implements
  Parameterisation  W = (α/r)·B·A + S, B ∈ R^{d_out×r}, A ∈ R^{r×d_in}; S sparse with nnz = ⌊δ·d_out·d_in⌋
                    entries on a support I drawn uniformly at random once and kept fixed; only the
                    values of S on I are learned. The dense W is never a parameter (it is formed in the
                    forward pass and freed after it).
  Initialisation    B = 0, A Kaiming-uniform (a = √5), S's values U(−1/√d_in, 1/√d_in), bias kept.
  Optimiser         AdamW on {B, A, values of S} (and every other trainable parameter).
  Parameters        r·(d_out + d_in) + ⌊δ·d_out·d_in⌋ (+ d_out bias) per replaced layer.

Symbols: δ → delta (reference ``sp_ratio``), r → rank, α → alpha (reference ``lora_alpha``),
B → lora_B, A → lora_A, I → sparse_index (a buffer), values of S → sparse_value.

Defaults: r = 128, α = 32, δ = 0.03 (reference scripts/llm_pretrain/sltrain60m.sh, LLaMA 60M; 130M uses
r = 256, α = 16; δ = 0.03 throughout); targets: every linear in the transformer blocks (the reference
matches "attn" and "mlp" in LLaMA; the BERT equivalents here), never the pooler or the task head.

Deviations
  - The support is drawn from a torch.Generator seeded by (torch.initial_seed(), layer name), not the
    global RNG, so the evaluator's rebuild reproduces it exactly (it is a buffer, not in the checkpoint).
  - r is capped at min(d_out, d_in) per layer (and α/r uses the capped r), so the tiny test models work.
  - The forward pass forms W densely (index_put of S's values + the low-rank product); the reference
    uses a custom C++ kernel that never forms it. The result is the same; peak activation memory is not.
  - Weight decay applies to B, A and S's values (all parts of weight matrices; decay_groups would skip
    the 1-D values); the paper uses weight_decay = 0.
  - SLTrain is a pretraining parameterisation: prepare_model discards the dense W of every targeted
    layer, so on a pretrained backbone those layers restart from the SLTrain initialisation.
  - The bias is kept, not re-initialised (documented, not implemented): the reference SpLoRaLinear draws a new
    bias U(−1/√d_out, 1/√d_out) because it builds every layer of a model trained from scratch (its docstring:
    "cannot be used for fine-tune"). Our grids fine-tune pretrained backbones, where the pretrained bias is the
    only part of the layer that survives the re-parameterisation, so we keep it. On a randomly initialised
    model (pretraining) the kept bias is nn.Linear's U(−1/√d_in, 1/√d_in): the reference's up to the scale
    (d_in instead of d_out).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from adaptbench.models import HEAD_PREFIXES
from adaptbench.protocol import OptimizerMethod, decay_groups, replace_module, target_linears
from adaptbench.registry import Paper, register

BLOCK_LINEARS = ("query", "key", "value", "intermediate.dense", "output.dense",  # BERT family
                 "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # LLaMA: attn + mlp


@dataclass(frozen=True)
class SLTrainConfig:
    rank: int = 128  # r, sltrain60m.sh "--rank 128" (130M: 256)
    alpha: float = 32.0  # α, sltrain60m.sh "--lora_alpha 32" (130M: 16)
    delta: float = 0.03  # δ, "--sp_ratio 0.03" in every reference script
    target_modules: tuple[str, ...] = BLOCK_LINEARS  # all block linears ("attn", "mlp" in the reference)

    def __post_init__(self):
        if not (isinstance(self.rank, int) and self.rank >= 1):
            raise ValueError(f"sltrain: rank must be a positive integer, got {self.rank!r}")
        if not self.alpha > 0:
            raise ValueError(f"sltrain: alpha must be > 0, got {self.alpha!r}")
        if not 0.0 < self.delta < 1.0:
            raise ValueError(f"sltrain: delta must be in (0, 1), got {self.delta!r}")


def sparse_support(d_out: int, d_in: int, delta: float, generator: torch.Generator) -> torch.Tensor:
    """I: ⌊δ·d_out·d_in⌋ flat indices into the (d_out, d_in) matrix, uniform without replacement, sorted."""
    nnz = int(delta * d_out * d_in)
    return torch.randperm(d_out * d_in, generator=generator)[:nnz].sort().values


def sltrain_weight(lora_B, lora_A, scaling: float, values, index) -> torch.Tensor:
    """W = (α/r)·B·A + S, S = scatter of ``values`` at flat ``index``; (d_out, d_in)."""
    low = scaling * (lora_B @ lora_A)
    return low.flatten().index_put((index,), values, accumulate=True).view_as(low)


def sltrain_parameter_count(d_out: int, d_in: int, rank: int, delta: float, bias: bool) -> int:
    """r·(d_out + d_in) + ⌊δ·d_out·d_in⌋ (+ d_out)."""
    return rank * (d_out + d_in) + int(delta * d_out * d_in) + (d_out if bias else 0)


def layer_generator(name: str) -> torch.Generator:
    """A generator from the run's seed and the layer name: same support at train and evaluation time."""
    return torch.Generator().manual_seed(zlib.crc32(f"sltrain:{torch.initial_seed()}:{name}".encode()))


class SLTrainLinear(nn.Module):
    """y = x·((α/r)·B·A + S)ᵀ + b with S's support fixed (a buffer) and its values trained."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, delta: float, generator: torch.Generator):
        super().__init__()
        d_out, d_in = base.out_features, base.in_features
        kw = dict(dtype=base.weight.dtype, device=base.weight.device)
        self.rank = min(rank, d_out, d_in)
        self.scaling = alpha / self.rank
        self.lora_A = nn.Parameter(torch.empty(self.rank, d_in, **kw))
        self.lora_B = nn.Parameter(torch.zeros(d_out, self.rank, **kw))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5), generator=generator)
        self.register_buffer("sparse_index", sparse_support(d_out, d_in, delta, generator).to(kw["device"]))
        bound = 1.0 / math.sqrt(d_in)
        values = torch.empty(self.sparse_index.numel(), **kw).uniform_(-bound, bound, generator=generator)
        self.sparse_value = nn.Parameter(values)
        self.bias = base.bias
        for p in (self.lora_A, self.lora_B, self.sparse_value):
            p.requires_grad_(base.weight.requires_grad)

    def weight(self) -> torch.Tensor:
        return sltrain_weight(self.lora_B, self.lora_A, self.scaling, self.sparse_value, self.sparse_index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight(), self.bias)


@register(
    family="optimizer",
    paper=Paper(
        title="SLTrain: a sparse plus low-rank approach for parameter and memory efficient pretraining",
        arxiv="2406.02214",
        year=2024,
        venue="NeurIPS",
        authors="Han, Li, Huang, Hong, Takeda, Jawanpuria, Mishra",
        code="https://github.com/andyjm3/SLTrain",
    ),
    config=SLTrainConfig,
)
class SLTrain(OptimizerMethod):
    TRAINABLE = ("*.lora_A", "*.lora_B", "*.sparse_value")

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Every targeted nn.Linear outside the task head → SLTrainLinear (dense W dropped)."""
        c = self.cfg
        for name, linear in target_linears(model, c.target_modules):
            if not name.startswith(HEAD_PREFIXES):
                replace_module(model, name, SLTrainLinear(linear, c.rank, c.alpha, c.delta, layer_generator(name)))
        return model

    def build(self, named_params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        named = list(named_params)
        values = [p for n, p in named if n.endswith(".sparse_value")]
        ids = {id(p) for p in values}
        groups = decay_groups([(n, p) for n, p in named if id(p) not in ids], weight_decay)
        if values:  # S's values are entries of a weight matrix: decayed like B and A
            groups.append({"params": values, "weight_decay": weight_decay})
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
