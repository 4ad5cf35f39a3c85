"""SVFit: Parameter-Efficient Fine-Tuning of Large Pre-Trained Models Using Singular Values.

Sun, Wei, Wu, Shi, He, Ma, Xie, Yang. Preprint, 2024. arXiv:2409.05926.
Reference implementation: none found (no code URL in the abstract or in the stored sources).

Implements (equation numbers are this module's own: only the abstract and a summary of the paper were
reachable, so the paper's numbering could not be checked)
  Eq. (1)  W = U Σ V^T, the thin SVD of the frozen pre-trained weight W (d_out×d_in);
  Eq. (2)  W = W_r + W_e with W_r = U_r diag(σ_r) V_r^T the best rank-r approximation (top-r singular
           triplets) and W_e = W − W_r the frozen remainder;
  Eq. (3)  W' = W_e + U_r diag(σ) V_r^T with only σ ∈ R^r trainable, σ = σ_r at init, so the adapted model
           starts equal to the base ("top-r singular values are used as trainable parameters to scale
           the fundamental subspaces", abstract); U_r, V_r, W_e and the bias stay frozen;
  merge: W' folds back into one plain nn.Linear, no inference latency.

Symbols: W → base.weight (holds W_e after apply), U_r → U_r (d_out×r), V_r^T → Vh_r (r×d_in),
σ → svfit_sigma (r,), r → r.

Defaults
  r = 768 on W_q, W_v. UNVERIFIED: the paper's hyperparameter tables were not reachable. Inferred from the
  abstract's "16 times fewer trainable parameters" than LoRA: LoRA on RoBERTa-base (r = 8 on W_q, W_v)
  trains 294,912 weights; 294,912 / 16 = 18,432 = 12 layers · 2 matrices · 768 singular values, i.e. every
  singular value of W_q and W_v. The learning rate, batch size and epochs belong in the grid.

Deviations
  - r is clipped to min(d_out, d_in) per layer (r = 768 on a 32-wide test model trains all 32 values).
  - The SVD runs in float64 and the factors are cast back to the weight's dtype, so W_e + U_r diag(σ_r) V_r^T
    equals W up to that dtype's rounding (not bit-exactly).
  - target_modules matches by name suffix; the default covers BERT/RoBERTa (query, value) and Llama-style
    (q_proj, v_proj) names.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from adaptbench.protocol import Adapter, fold_wrapped_layers, freeze_all, replace_module, target_linears
from adaptbench.registry import Paper, register
from methods.adapters._layers import AdaptedLinear


@dataclass(frozen=True)
class SVFitConfig:
    r: int = 768  # UNVERIFIED; inferred from the abstract's "16x fewer than LoRA" (see module docstring)
    target_modules: tuple[str, ...] = ("query", "value", "q_proj", "v_proj")  # W_q, W_v, as the LoRA baseline

    def __post_init__(self):
        if not (isinstance(self.r, int) and not isinstance(self.r, bool) and self.r >= 1):
            raise ValueError(f"svfit: r must be a positive integer (number of singular values to train), got {self.r!r}")
        if not (isinstance(self.target_modules, tuple) and self.target_modules
                and all(isinstance(t, str) and t for t in self.target_modules)):
            raise ValueError(f"svfit: target_modules must be a non-empty list of module-name suffixes, "
                             f"got {self.target_modules!r}")


def top_r_svd(weight: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. (1): W = U Σ V^T, truncated to the top r triplets, in float64.

    Returns U_r (d_out×r), σ_r (r,) in descending order, V_r^T (r×d_in)."""
    U, S, Vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    return U[:, :r], S[:r], Vh[:r]


def svfit_low_rank(U_r: torch.Tensor, sigma: torch.Tensor, Vh_r: torch.Tensor) -> torch.Tensor:
    """Eq. (2)/(3): W_r = U_r diag(σ) V_r^T, shape (d_out, d_in)."""
    return (U_r * sigma) @ Vh_r


def svfit_residual(weight: torch.Tensor, U_r: torch.Tensor, sigma_r: torch.Tensor, Vh_r: torch.Tensor) -> torch.Tensor:
    """Eq. (2): W_e = W − U_r diag(σ_r) V_r^T (the singular triplets r+1 … min(d_out, d_in))."""
    return weight.detach().double() - svfit_low_rank(U_r, sigma_r, Vh_r)


class SVFitLinear(AdaptedLinear):
    """y = W_e x + b + U_r diag(σ) V_r^T x  (Eq. 3), with only σ trainable."""

    def __init__(self, base: nn.Linear, r: int):
        super().__init__(base)
        dtype = base.weight.dtype
        self.r = min(r, *base.weight.shape)
        U_r, sigma_r, Vh_r = top_r_svd(base.weight, self.r)
        with torch.no_grad():  # the frozen base now holds W_e
            base.weight.copy_(svfit_residual(base.weight, U_r, sigma_r, Vh_r).to(dtype))
        self.register_buffer("U_r", U_r.to(dtype))
        self.register_buffer("Vh_r", Vh_r.to(dtype))
        self.svfit_sigma = nn.Parameter(sigma_r.to(dtype))

    def delta_forward(self, x: torch.Tensor) -> torch.Tensor:
        # (…, d_in) @ (d_in, r) ⊙ σ @ (r, d_out): never materialises the d_out×d_in product while training
        return ((x @ self.Vh_r.T) * self.svfit_sigma) @ self.U_r.T

    def delta_weight(self) -> torch.Tensor:
        """Eq. (3): U_r diag(σ) V_r^T, so the merged weight is W_e + U_r diag(σ) V_r^T."""
        return svfit_low_rank(self.U_r, self.svfit_sigma, self.Vh_r)


@register(
    family="adapter",
    paper=Paper(
        title="SVFit: Parameter-Efficient Fine-Tuning of Large Pre-Trained Models Using Singular Values",
        arxiv="2409.05926",
        year=2024,
        venue="arXiv preprint",
        authors="Sun, Wei, Wu, Shi, He, Ma, Xie, Yang",
        code="",
    ),
    config=SVFitConfig,
    mergeable=True,
)
class SVFit(Adapter):
    TRAINABLE = ("*.svfit_sigma",)

    def apply(self, model: nn.Module) -> nn.Module:
        freeze_all(model)
        for name, linear in target_linears(model, self.cfg.target_modules):
            replace_module(model, name, SVFitLinear(linear, self.cfg.r))
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        """Fold U_r diag(σ) V_r^T into W_e and put the plain nn.Linear back."""
        return fold_wrapped_layers(model, SVFitLinear)
