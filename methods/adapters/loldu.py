"""LoLDU: Low-Rank Adaptation via Lower-Diag-Upper Decomposition for Parameter-Efficient Fine-Tuning.

Shi, Wei, Wu, Ran, Sun, He, Yang. Preprint, 2024. arXiv:2410.13618.
Reference implementation: https://github.com/SKDDJ/LoLDU (minloldu/loldu.py, commit 9790d906).

Implements (equation numbers are this module's own: the paper's method section was not reachable, only its
abstract, the caption of Fig. 3 and the authors' code, so the paper's numbering could not be checked)
  Eq. (1)  W = P L D U, the LDU decomposition with partial (row) pivoting of the frozen weight W
           (d_out×d_in): P a permutation, L unit lower triangular (d_out×k), D = diag(d) the pivots,
           U unit upper triangular (k×d_in), k = min(d_out, d_in);
  Eq. (2)  ΔW = σ · P L_r diag(z) U_r, with L_r = L[:, :r], U_r = U[:r, :] frozen ("top-r submatrices",
           Fig. 3), z ∈ R^r trainable and initialised to d[:r], σ a scalar scale;
  Eq. (3)  W_res = W − σ0 · P L_r diag(d[:r]) U_r frozen, so W' = W_res + ΔW equals W at init; with σ0 = 1
           this is the tail P L[:, r:] D[r:] U[r:, :] of the decomposition (Fig. 3's residual subspace), with the
           default σ0 = 1/r it also keeps (1 − 1/r) of the top-r part (the reference code's ``resmat``);
  σ0 = α/r  the reference code's ``scaling = lora_alpha / rank``, the initial value of its ``scaling_factor``;
  merge: W' folds back into one plain nn.Linear.

Symbols: P → perm (P h = h[perm]), L_r → L_r, U_r → U_r, z (the trainable diagonal) → loldu_d,
σ → loldu_scale, σ0 → sigma0 (null: α/r), α → REFERENCE_ALPHA, r → r.

Defaults
  r = 768 on W_q, W_v: the reference code's default config (rank=768), the ViT-B/16 setting (rank 768 on
  query/value) and Table I's 0.0184M trainable parameters for RoBERTa-base = 12 layers · 2 · 768 (table
  transcription in reference/claims/CLAIMS.md, secondary source).
  σ0 = 1/r (1/768 at r = 768): the reference code's scaling α/r with α = 1, the ``lora_alpha`` default of
  ``LoLDUParametrization.from_linear``, which ``default_loldu_config`` (rank 768) uses; r is the configured rank,
  before per-layer clipping, as there. The paper's LLaMA2 (rank 1024, alpha 1024) and ViT (768, 768) settings
  (secondary transcription) have α = r, i.e. sigma0 = 1: set it in those grids. The GLUE rank and alpha are not
  given (CLAIMS.md "LoLDU"), so the reference default stands for Table I. GLUE learning rates (2e-4 … 4e-4) and
  epochs are per task in the appendix and live in the grid.

Deviations
  - σ trains by default (Fig. 3 draws σ in the adapter; reference/methods-catalog.md reads the paper as
    training "a scalar scale" too). The released code trains only z (get_loldu_params keeps `vector_z`)
    and Table I's 0.0184M counts z only (24·768 = 18,432; with σ it is 18,456); train_scale=False matches
    that (σ is then a frozen buffer). UNVERIFIED which of the two the paper's runs used.
  - r is clipped to min(d_out, d_in) per layer.
  - The decomposition runs in float64 and is cast back to the weight's dtype (the reference code uses float32).
  - A weight with an exactly zero pivot has no LDU form with unit U; it raises instead of producing inf.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from adaptbench.protocol import Adapter, fold_wrapped_layers, freeze_all, replace_module, target_linears
from adaptbench.registry import Paper, register
from methods.adapters._layers import AdaptedLinear


REFERENCE_ALPHA = 1.0  # minloldu/loldu.py: LoLDUParametrization.from_linear(..., lora_alpha=1)


@dataclass(frozen=True)
class LoLDUConfig:
    r: int = 768  # reference code default; ViT rank 768; Table I 0.0184M = 24·768 on RoBERTa-base
    sigma0: float | None = None  # σ0; None: α/r with the reference's α = 1 (1/768); paper LLaMA2/ViT α = r: 1.0
    train_scale: bool = True  # Fig. 3's σ; the released code freezes it (see Deviations)
    target_modules: tuple[str, ...] = ("query", "value", "q_proj", "v_proj")  # query/value in every setting

    def __post_init__(self):
        if not (isinstance(self.r, int) and not isinstance(self.r, bool) and self.r >= 1):
            raise ValueError(f"loldu: r must be a positive integer (size of the trainable diagonal), got {self.r!r}")
        if self.sigma0 is not None and not (isinstance(self.sigma0, (int, float)) and not isinstance(self.sigma0, bool)
                                            and math.isfinite(self.sigma0) and self.sigma0 != 0):
            raise ValueError(f"loldu: sigma0 must be null (α/r with α = 1, the reference's) or a finite non-zero number "
                             f"(initial scale σ), got {self.sigma0!r}")
        if not isinstance(self.train_scale, bool):
            raise ValueError(f"loldu: train_scale must be true or false, got {self.train_scale!r}")
        if not (isinstance(self.target_modules, tuple) and self.target_modules
                and all(isinstance(t, str) and t for t in self.target_modules)):
            raise ValueError(f"loldu: target_modules must be a non-empty list of module-name suffixes, "
                             f"got {self.target_modules!r}")


def initial_scale(r: int, sigma0: float | None) -> float:
    """σ0: the configured value, or α/r with α = REFERENCE_ALPHA (the reference code's scaling = lora_alpha / rank)."""
    return REFERENCE_ALPHA / r if sigma0 is None else float(sigma0)


def ldu(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. (1): W = P L diag(d) U with partial pivoting, in float64.

    Returns P (d_out×d_out), L unit lower (d_out×k), d (k,), U unit upper (k×d_in), k = min(d_out, d_in)."""
    P, L, U = torch.linalg.lu(weight.detach().double())
    d = torch.diagonal(U)
    if not d.is_meta and bool((d == 0).any()):
        raise ValueError("loldu: the weight has a zero LU pivot, so U cannot be made unit upper triangular")
    return P, L, d, U / d.unsqueeze(-1)


def loldu_delta(P: torch.Tensor, L_r: torch.Tensor, z: torch.Tensor, U_r: torch.Tensor, sigma) -> torch.Tensor:
    """Eq. (2): ΔW = σ · P L_r diag(z) U_r, shape (d_out, d_in)."""
    return sigma * (P @ (L_r * z) @ U_r)


def loldu_residual(weight: torch.Tensor, P: torch.Tensor, L_r: torch.Tensor, d_r: torch.Tensor,
                   U_r: torch.Tensor, sigma0: float) -> torch.Tensor:
    """Eq. (3): W_res = W − σ0 · P L_r diag(d_r) U_r (= P L[:, r:] D[r:] U[r:] when σ0 = 1)."""
    return weight.detach().double() - loldu_delta(P, L_r, d_r, U_r, sigma0)


class LoLDULinear(AdaptedLinear):
    """y = W_res x + b + σ · P L_r diag(z) U_r x  (Eq. 2–3), with only z (and σ) trainable."""

    def __init__(self, base: nn.Linear, r: int, sigma0: float, train_scale: bool):
        super().__init__(base)
        dtype = base.weight.dtype
        P, L, d, U = ldu(base.weight)
        self.r = min(r, d.numel())
        L_r, d_r, U_r = L[:, : self.r], d[: self.r], U[: self.r]
        with torch.no_grad():  # the frozen base now holds W_res
            base.weight.copy_(loldu_residual(base.weight, P, L_r, d_r, U_r, sigma0).to(dtype))
        self.register_buffer("perm", P.argmax(dim=1))  # (P h)_i = h_perm[i], so P h = h[..., perm]
        self.register_buffer("L_r", L_r.to(dtype))
        self.register_buffer("U_r", U_r.to(dtype))
        self.loldu_d = nn.Parameter(d_r.to(dtype))
        scale = torch.tensor(float(sigma0), dtype=dtype)
        if train_scale:
            self.loldu_scale = nn.Parameter(scale)
        else:
            self.register_buffer("loldu_scale", scale)

    def delta_forward(self, x: torch.Tensor) -> torch.Tensor:
        # (…, d_in) @ (d_in, r) ⊙ z @ (r, d_out), then the row permutation P; no d_out×d_in product
        h = ((x @ self.U_r.T) * self.loldu_d) @ self.L_r.T
        return self.loldu_scale * h[..., self.perm]

    def delta_weight(self) -> torch.Tensor:
        """Eq. (2): ΔW = σ · P L_r diag(z) U_r (P L_r = L_r[perm]), so the merged weight is W_res + ΔW (Eq. 3)."""
        return self.loldu_scale * ((self.L_r[self.perm] * self.loldu_d) @ self.U_r)


@register(
    family="adapter",
    paper=Paper(
        title="LoLDU: Low-Rank Adaptation via Lower-Diag-Upper Decomposition for Parameter-Efficient Fine-Tuning",
        arxiv="2410.13618",
        year=2024,
        venue="arXiv preprint",
        authors="Shi, Wei, Wu, Ran, Sun, He, Yang",
        code="https://github.com/SKDDJ/LoLDU@9790d906a439eb1a6af95e188d7407dc4d4532e1",
    ),
    config=LoLDUConfig,
    mergeable=True,
)
class LoLDU(Adapter):
    TRAINABLE = ("*.loldu_d", "*.loldu_scale")

    def apply(self, model: nn.Module) -> nn.Module:
        freeze_all(model)
        c = self.cfg
        sigma0 = initial_scale(c.r, c.sigma0)
        for name, linear in target_linears(model, c.target_modules):
            replace_module(model, name, LoLDULinear(linear, c.r, sigma0, c.train_scale))
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        """Fold σ · P L_r diag(z) U_r into W_res and put the plain nn.Linear back."""
        return fold_wrapped_layers(model, LoLDULinear)
