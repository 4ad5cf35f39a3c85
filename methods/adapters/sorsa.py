"""SORSA: Singular Values and Orthonormal Regularized Singular Vectors Adaptation of Large Language Models.

Cao, Song. arXiv preprint 2024 (v1 single-author Cao; withdrawn ICLR 2025 submission). arXiv:2409.00055.
Reference implementation: https://github.com/Gunale0926/SORSA (sorsalib/src/sorsa/layer.py, run.py@6ca0eaf).

Implements (the equations are cited by name: we could not read the paper's numbered equations, see Deviations)
  architecture       W0 = W_r + W_p, W_p = U_p diag(S_p) V_pᵀ from the top-r SVD of W0 (trainable),
                     W_r = U_r diag(S_r) V_rᵀ the remaining triplets (frozen); so the model is unchanged at init;
  regulariser        L_reg = ‖U_pᵀU_p − I‖_F + ‖V_pᵀV_p − I‖_F  (plain, not squared, Frobenius norms);
                     0 at init because the SVD factors are orthonormal;
  update rule        W_{p,t+1} = W_{p,t} − η_t ∇L_train − γ_t ∇L_reg;
  merge              W = W_r + U_p diag(S_p) V_pᵀ, no inference latency.

Symbols: U_p → sorsa_U (d_out×r), S_p → sorsa_S (r), V_pᵀ → sorsa_Vh (r×d_in), W_r → base.weight, γ → gamma.

Defaults: rank 128, γ = 4e-4 (scripts/train_sorsa.sh: `--rank 128 --gamma 4e-4`, also the γ of the sorsalib README);
lr 3e-5, wd 0 and 1 epoch are training settings and belong in the grid. Targets: all linear maps of the
transformer blocks (sorsalib README: q,k,v,o,gate,up,down for Llama); the BERT/RoBERTa names are their analogue.

Deviations
  - Sources: the formulas come from the arXiv abstract (v3–v6), the first author's explanation page and the official
    code; the paper body (its numbered equations and any γ_t schedule) was not available to us.
  - The γ update: the paper writes the regulariser gradient as its own term with its own rate γ_t. The official
    trainer back-propagates γ·L_reg into the same gradients right before the single AdamW step, which is exactly
    adding γ·L_reg to the loss; we do the same through ``extra_loss``. (We could not read the paper's text on how
    γ_t is scheduled; the blog of the first author gives the same two-term update without a schedule.)
  - Aggregation over layers follows the code: the sum of the ‖·‖_F terms over all adapted matrices divided by
    their count (2 per layer), i.e. a mean; the paper states the per-layer form only.
  - r is clamped to min(d_out, d_in) per layer, so that the default r = 128 also runs on tiny test models
    (then W_r = 0 and every triplet trains).
  - No α scaling (the code's alpha=None gives scale 1, as in the paper) and no adapter dropout (unused in the scripts).
  - The SVD runs in float32 and the factors are cast back to the weight's dtype, as in the code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from adaptbench.protocol import Adapter, fold_wrapped_layers, freeze_all, replace_module, target_linears
from adaptbench.registry import Paper, register
from methods.adapters._layers import AdaptedLinear

ALL_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",  # Llama (README)
               "query", "key", "value", "output.dense", "intermediate.dense")  # BERT/RoBERTa analogue


@dataclass(frozen=True)
class SORSAConfig:
    r: int = 128  # scripts/train_sorsa.sh --rank 128 (README example: 16)
    gamma: float = 4e-4  # γ, scripts/train_sorsa.sh --gamma 4e-4
    target_modules: tuple[str, ...] = ALL_LINEARS  # sorsalib README: all linear layers of the blocks

    def __post_init__(self):
        if not (isinstance(self.r, int) and self.r >= 1):
            raise ValueError(f"sorsa: r must be a positive integer, got {self.r!r}")
        if not self.gamma >= 0:
            raise ValueError(f"sorsa: gamma must be >= 0 (0 switches the orthonormal regulariser off), got {self.gamma!r}")
        if not self.target_modules:
            raise ValueError("sorsa: target_modules must name at least one layer, e.g. ('query', 'value')")


def principal_split(weight: torch.Tensor, r: int):
    """Architecture: W0 = W_r + U_p diag(S_p) V_pᵀ with the r largest singular triplets in W_p.

    weight (d_out, d_in) → U_p (d_out, r), S_p (r,), Vh_p = V_pᵀ (r, d_in), W_r (d_out, d_in)."""
    w = weight.detach().to(torch.float32)
    U, S, Vh = torch.linalg.svd(w, full_matrices=False)  # singular values in descending order
    U_p, S_p, Vh_p = U[:, :r], S[:r], Vh[:r]
    W_r = w - principal_weight(U_p, S_p, Vh_p)
    return U_p, S_p, Vh_p, W_r


def principal_weight(U_p: torch.Tensor, S_p: torch.Tensor, Vh_p: torch.Tensor) -> torch.Tensor:
    """Architecture: W_p = U_p diag(S_p) V_pᵀ, shape (d_out, d_in)."""
    return (U_p * S_p) @ Vh_p


def orthonormal_regularizer(U_p: torch.Tensor, Vh_p: torch.Tensor) -> torch.Tensor:
    """Orthonormal regulariser: L_reg = ‖U_pᵀU_p − I‖_F + ‖V_pᵀV_p − I‖_F; V_pᵀV_p = Vh_p Vh_pᵀ, both r×r."""
    eye = torch.eye(U_p.shape[1], device=U_p.device, dtype=U_p.dtype)
    return torch.linalg.matrix_norm(U_p.T @ U_p - eye) + torch.linalg.matrix_norm(Vh_p @ Vh_p.T - eye)


class SORSALinear(AdaptedLinear):
    """y = W_r x + b + U_p diag(S_p) V_pᵀ x; W_r is the frozen ``base.weight``."""

    def __init__(self, base: nn.Linear, r: int):
        super().__init__(base)
        r = min(r, base.out_features, base.in_features)
        U_p, S_p, Vh_p, W_r = principal_split(base.weight, r)
        dtype = base.weight.dtype
        with torch.no_grad():
            base.weight.copy_(W_r.to(dtype))
        self.sorsa_U = nn.Parameter(U_p.to(dtype).contiguous())
        self.sorsa_S = nn.Parameter(S_p.to(dtype).contiguous())
        self.sorsa_Vh = nn.Parameter(Vh_p.to(dtype).contiguous())

    def delta_forward(self, x: torch.Tensor) -> torch.Tensor:
        # (…, d_in) @ (d_in, r) · S @ (r, d_out): never forms the d_out×d_in product during training
        return ((x @ self.sorsa_Vh.T) * self.sorsa_S) @ self.sorsa_U.T

    def delta_weight(self) -> torch.Tensor:
        """W_p = U_p diag(S_p) V_pᵀ: merged, W_r + W_p is a plain weight again."""
        return principal_weight(self.sorsa_U, self.sorsa_S, self.sorsa_Vh)

    def regularizer(self) -> torch.Tensor:
        return orthonormal_regularizer(self.sorsa_U, self.sorsa_Vh)


@register(
    family="adapter",
    paper=Paper(
        title="SORSA: Singular Values and Orthonormal Regularized Singular Vectors Adaptation of Large Language Models",
        arxiv="2409.00055",
        year=2024,
        venue="arXiv preprint",
        authors="Cao, Song",
        code="https://github.com/Gunale0926/SORSA@6ca0eaf",
    ),
    config=SORSAConfig,
    mergeable=True,
)
class SORSA(Adapter):
    TRAINABLE = ("*.sorsa_U", "*.sorsa_S", "*.sorsa_Vh")

    def apply(self, model: nn.Module) -> nn.Module:
        freeze_all(model)
        for name, linear in target_linears(model, self.cfg.target_modules):
            replace_module(model, name, SORSALinear(linear, self.cfg.r))
        return model

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        """γ · mean over adapted matrices of ‖·‖_F (the official ``calc_ortho``: sum of both terms / (2·layers))."""
        layers = [m for m in model.modules() if isinstance(m, SORSALinear)]
        if not layers or self.cfg.gamma == 0:
            return None
        return self.cfg.gamma * torch.stack([m.regularizer() for m in layers]).sum() / (2 * len(layers))

    def merge(self, model: nn.Module) -> nn.Module:
        """Fold W_p into W_r and put the plain nn.Linear back."""
        return fold_wrapped_layers(model, SORSALinear)
