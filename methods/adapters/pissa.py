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

import torch
from torch import nn

from adaptbench.protocol import Adapter, fold_wrapped_layers, freeze_all, replace_module, target_linears
from adaptbench.registry import Paper, register
from methods.adapters.lora import LoRALinear


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


def svd(weight: torch.Tensor, q: int, niter: int | None = None):
    """§3: weight = U diag(S) Vh in float32, singular values in descending order.

    niter=None: exact thin SVD, all min(out, in) triplets. niter=k: randomized SVD (fast-SVD section) with k
    subspace iterations, the top q triplets only. Shapes: U (out, ·), S (·,), Vh (·, in)."""
    w = weight.detach().to(torch.float32)
    if niter is None:
        return torch.linalg.svd(w, full_matrices=False)
    U, S, V = torch.svd_lowrank(w, q=q, niter=niter)
    return U, S, V.T


def factors(U_r: torch.Tensor, S_r: torch.Tensor, Vh_r: torch.Tensor, scaling: float):
    """§3: A^T = lora_A = (S_r/s)^{1/2} Vh_r (r, in);  B^T = lora_B = U_r (S_r/s)^{1/2} (out, r);  s = α/r,
    so that s·lora_B lora_A = U_r diag(S_r) Vh_r."""
    root = (S_r / scaling).sqrt()
    return root[:, None] * Vh_r, U_r * root[None, :]


@torch.no_grad()
def init_from_svd_(layer: LoRALinear, U_r: torch.Tensor, S_r: torch.Tensor, Vh_r: torch.Tensor) -> None:
    """§3: put the r chosen singular triplets into (lora_A, lora_B) and W^res = W − s·B A into base.weight."""
    weight = layer.base.weight
    lora_A, lora_B = factors(U_r, S_r, Vh_r, layer.scaling)
    residual = weight.to(torch.float32) - layer.scaling * (lora_B @ lora_A)
    layer.lora_A.copy_(lora_A.to(weight.dtype))
    layer.lora_B.copy_(lora_B.to(weight.dtype))
    weight.copy_(residual.to(weight.dtype))


def check_rank(method: str, r: int, name: str, linear: nn.Linear) -> None:
    if r > min(linear.in_features, linear.out_features):
        raise ValueError(f"{method}: r = {r} exceeds min(in, out) = "
                         f"{min(linear.in_features, linear.out_features)} of '{name}'; lower r")


def merge_svd_layers(model: nn.Module) -> nn.Module:
    """W^res + s·B A folded into one plain nn.Linear per adapted layer."""
    return fold_wrapped_layers(model, LoRALinear)


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
            layer = LoRALinear(linear, c.r, c.alpha, dropout=0.0, init_a="kaiming_uniform")  # overwritten below
            U, S, Vh = svd(linear.weight, c.r, c.niter)
            init_from_svd_(layer, U[:, : c.r], S[: c.r], Vh[: c.r])  # principal: the r largest
            replace_module(model, name, layer)
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        return merge_svd_layers(model)
