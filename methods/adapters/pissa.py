"""PiSSA: Principal Singular Values and Singular Vectors Adaptation of Large Language Models.

Meng, Wang, Zhang. NeurIPS 2024. arXiv:2404.02948.
Reference implementation: https://github.com/GraphPKU/PiSSA@87f4db6 (init_pissa.py builds the adapter
with PEFT's ``LoraConfig(init_lora_weights="pissa" | "pissa_niter_<k>")``).

Implements
  §3  W = U S V^T (SVD of the pre-trained weight);
  §3  A = U[:, :r] S[:r, :r]^{1/2},  B = S[:r, :r]^{1/2} V[:, :r]^T   (principal part, trainable);
  §3  W^res = U[:, r:] S[r:, r:] V[:, r:]^T = W − A B                  (residual, frozen in place of W);
  §3  Y = X (W^res + A B): same architecture as LoRA, so the adapted model starts equal to the base;
  fast-SVD section: randomized SVD (Halko et al.) with ``niter`` subspace iterations (torch.svd_lowrank);
  merge: W^res + A B is a plain weight again, no inference latency.
The SVD and the factorisation, shared with SoMA and CorDA, live in _svd_math.py; the layer is _layers.LowRankLinear.

Symbols. The paper writes Y = X W with W ∈ R^{m×n} (m = in, n = out); nn.Linear stores weight = W^T of
shape (out, in) and computes x @ weight^T. With weight = U' S V'^T (torch.linalg.svd), the paper's U is V'
and its V is U', hence
  A^T → lora_A = S_r^{1/2} V'_r^T  (r × in),   B^T → lora_B = U'_r S_r^{1/2}  (out × r),
  W^res → base.weight, r → r, α → alpha, niter → niter.

Scaling. The paper uses none: lora_alpha = lora_r throughout (§5 setup; Table 10 has α = r = 8 on all
GLUE tasks but QNLI). PEFT keeps LoRA's α/r factor and divides S_r by it before the square root, so
(α/r)·lora_B lora_A = U'_r S_r V'_r^T whatever α is; α then only rescales the factors' learning dynamics.
We do exactly the same, so α = r reproduces the paper and other α values reproduce PEFT.

Defaults: rank 8 on W_Q, W_K, W_V with α = 8 for DeBERTa-v3-base GLUE (Table 3 setup, Table 10).
NLG experiments use all linear layers and r = α = 128 (released scripts); set those in the grid.

Deviations
  - Table 3 prints 1.33M trainable parameters, which is rank 8 on all six matrices of DeBERTa-v3-base,
    while the text names W_Q, W_K, W_V (0.44M); we follow the text. Override target_modules for the count.
  - SVD runs in float32 and the factors are cast back to the layer dtype (as PEFT and the authors' code).
  - target_modules matches by name suffix and covers BERT/RoBERTa (query, key, value), DeBERTa
    (query_proj, key_proj, value_proj) and Llama-style (q_proj, k_proj, v_proj) names.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from adaptbench.protocol import Adapter, fold_wrapped_layers, freeze_all, replace_module, target_linears
from adaptbench.registry import Paper, register
from methods.adapters._layers import LowRankLinear, check_rank
from methods.adapters._svd_math import init_from_svd_, svd


@dataclass(frozen=True)
class PiSSAConfig:
    r: int = 8  # Table 3 / Table 10: rank 8 on DeBERTa-v3-base GLUE (NLG: 128)
    alpha: float = 8.0  # Table 10: α = 8 (QNLI 16); §5: lora_alpha = lora_r, i.e. no extra scaling
    target_modules: tuple[str, ...] = (  # Table 3 setup: W_Q, W_K, W_V
        "query", "key", "value", "query_proj", "key_proj", "value_proj", "q_proj", "k_proj", "v_proj")
    niter: int | None = None  # None: exact SVD (authors' init_pissa.py default "pissa"); k: fast SVD, k iterations

    def __post_init__(self):
        if not (isinstance(self.r, int) and self.r >= 1):
            raise ValueError(f"pissa: r must be a positive integer, got {self.r!r}")
        if not self.alpha > 0:
            raise ValueError(f"pissa: alpha must be > 0, got {self.alpha!r}")
        if not (isinstance(self.target_modules, tuple) and self.target_modules
                and all(isinstance(t, str) for t in self.target_modules)):
            raise ValueError(f"pissa: target_modules must be a non-empty list of names, got {self.target_modules!r}")
        if self.niter is not None and not (isinstance(self.niter, int) and self.niter >= 0):
            raise ValueError(f"pissa: niter must be null (exact SVD) or an integer >= 0, got {self.niter!r}")


@register(
    family="adapter",
    paper=Paper(
        title="PiSSA: Principal Singular Values and Singular Vectors Adaptation of Large Language Models",
        arxiv="2404.02948",
        year=2024,
        venue="NeurIPS",
        authors="Meng, Wang, Zhang",
        code="https://github.com/GraphPKU/PiSSA@87f4db6",
    ),
    config=PiSSAConfig,
    mergeable=True,
)
class PiSSA(Adapter):
    TRAINABLE = ("*.lora_A", "*.lora_B")

    def apply(self, model: nn.Module) -> nn.Module:
        freeze_all(model)
        c = self.cfg
        for name, linear in target_linears(model, c.target_modules):
            check_rank("pissa", c.r, name, linear)
            # A's Kaiming draw is overwritten below but kept: the RNG stream training continues from depends on it
            layer = LowRankLinear(linear, c.r, c.alpha, dropout=0.0, init_a="kaiming_uniform")
            U, S, Vh = svd(linear.weight, c.r, c.niter)
            init_from_svd_(layer, U[:, : c.r], S[: c.r], Vh[: c.r])  # principal: the r largest
            replace_module(model, name, layer)
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        """W^res + s·B A folded into one plain nn.Linear per adapted layer."""
        return fold_wrapped_layers(model, LowRankLinear)
