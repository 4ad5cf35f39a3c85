"""SVD-Free Low-Rank Adaptive Gradient Optimization for Large Language Models (DCT-AdamW).

Modoranu, Safaryan, Schultheis, Alistarh. arXiv preprint 2025 (v1; later versions retitled "FFT-based
Dynamic Subspace Selection for Low-Rank Adaptive Optimization of Large Language Models"). arXiv:2505.17967.
Reference implementation: https://github.com/IST-DASLab/ISTA-DASLab-Optimizers
(ista_daslab_optimizers/fft_low_rank/dct_adamw.py, fft_projector.py, utils/dct.py).

Implements
  Step 1, basis      a fixed orthonormal DCT-II matrix D ∈ R^{n×n}, D[i, k] = c_k·√(2/n)·cos(π(2i+1)k/(2n)),
                     c_0 = 1/√2, c_k = 1 (k > 0); built once per size n = min(d_out, d_in), shared by layers.
  Step 2, selection  every T steps: S = G·D (d_out ≥ d_in) or S = Dᵀ·G (d_out < d_in); rank the basis
                     columns by the ℓ_p norm of their column (row) of S and keep the top r indices I;
                     only I is stored, never a projection matrix, and no SVD is computed.
  Update             g = G·D_I (or D_Iᵀ·G), the matching slice of S; Adam on g in R^{d×r};
                     W ← W − η·N·D_Iᵀ (or D_I·N), N = m̂/(√v̂ + ε), with decoupled weight decay.
  1-D parameters and matrices with a side ≥ max_shape (e.g. a 32k-vocabulary embedding) get plain AdamW.

Symbols: D → dct_basis(n), I → state["indices"], r → rank, T → update_proj_gap, p → ell_norm,
G → p.grad, g → the projected gradient, m, v → state["exp_avg"], state["exp_avg_sq"].

Defaults: r = 256 and T = 200 (the GaLore protocol the paper compares against; the paper's own per-model
table was not readable here), ℓ1 ranking (reference ``ell_norm=1``), max_shape = 32000 (reference),
Adam β = (0.9, 0.999), ε = 1e-8 (reference DCTAdamW).

Deviations
  - D's columns are the DCT-II atoms; the reference multiplies by the transpose (its "DCT-3" matrix).
    Both are orthonormal bases; the selection rule is unchanged.
  - The moments are kept as they are when I changes (GaLore's choice); the later versions' moment
    rotation R = D_prevᵀ D_crt and error feedback are not implemented.
  - r is capped at min(d_out, d_in); then every column is kept and the step is Adam in the DCT basis.
  - The shared DCT matrices (n² floats per distinct n) live on the optimizer, not in optimizer.state,
    so optimizer_state_bytes counts m, v and the indices only; ``basis_bytes()`` reports the rest.
  - Selected indices are sorted ascending so moment coordinates follow frequency order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from adaptbench.protocol import OptimizerMethod, decay_groups
from adaptbench.registry import Paper, register


@dataclass(frozen=True)
class DCTLowRankConfig:
    rank: int = 256  # r; GaLore protocol (pre-training ranks 128–512), capped at min(d_out, d_in)
    update_proj_gap: int = 200  # T; GaLore protocol (reference default is 1: re-select every step)
    ell_norm: int = 1  # p of the ranking norm; reference ``ell_norm=1``
    max_shape: int = 32_000  # matrices with a side ≥ this get plain AdamW (reference)
    beta1: float = 0.9  # Adam (reference default)
    beta2: float = 0.999  # Adam (reference default)
    eps: float = 1e-8  # Adam (reference default)

    def __post_init__(self):
        for name in ("rank", "update_proj_gap", "max_shape"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"dct_lowrank: {name} must be a positive integer, got {getattr(self, name)!r}")
        if self.ell_norm not in (1, 2):
            raise ValueError(f"dct_lowrank: ell_norm must be 1 or 2, got {self.ell_norm!r}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"dct_lowrank: {name} must be in [0, 1), got {getattr(self, name)!r}")
        if not self.eps > 0:
            raise ValueError(f"dct_lowrank: eps must be > 0, got {self.eps!r}")


def dct_basis(n: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """Step 1: orthonormal DCT-II, columns = atoms: D[i, k] = c_k √(2/n) cos(π(2i+1)k/(2n)); (n, n)."""
    i = torch.arange(n, dtype=torch.float64)[:, None]
    k = torch.arange(n, dtype=torch.float64)[None, :]
    d = math.sqrt(2.0 / n) * torch.cos(math.pi * (2 * i + 1) * k / (2 * n))
    d[:, 0] /= math.sqrt(2.0)
    return d.to(dtype=dtype, device=device)


def right_side(shape) -> bool:
    """Project the smaller side: columns (G·D) when d_out ≥ d_in, rows (Dᵀ·G) otherwise."""
    return shape[0] >= shape[1]


def alignment(grad: torch.Tensor, basis: torch.Tensor, ell_norm: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 2: S = G·D or Dᵀ·G and the ℓ_p norm of each atom's column (row) of S; (…), (n,)."""
    if right_side(grad.shape):
        s = grad @ basis
        return s, s.norm(p=ell_norm, dim=0)
    s = basis.T @ grad
    return s, s.norm(p=ell_norm, dim=1)


def select_columns(scores: torch.Tensor, rank: int) -> torch.Tensor:
    """Step 2: indices of the r largest alignment scores, ascending; (r,) int64."""
    return torch.topk(scores, min(rank, scores.numel())).indices.sort().values


def project(grad: torch.Tensor, basis: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """g = G·D_I (d_out, r) or D_Iᵀ·G (r, d_in)."""
    return grad @ basis[:, idx] if right_side(grad.shape) else basis[:, idx].T @ grad


def project_back(low: torch.Tensor, basis: torch.Tensor, idx: torch.Tensor, shape) -> torch.Tensor:
    """N·D_Iᵀ or D_I·N, back to (d_out, d_in)."""
    return low @ basis[:, idx].T if right_side(shape) else basis[:, idx] @ low


class DCTAdamW(torch.optim.Optimizer):
    """AdamW whose matrices keep their moments in the span of r DCT atoms chosen by gradient alignment."""

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, rank=256,
                 update_proj_gap=200, ell_norm=1, max_shape=32_000):
        if not lr > 0:
            raise ValueError(f"dct_lowrank: lr must be > 0, got {lr!r}")
        if not weight_decay >= 0:
            raise ValueError(f"dct_lowrank: weight_decay must be >= 0, got {weight_decay!r}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, rank=rank,
                                      update_proj_gap=update_proj_gap, ell_norm=ell_norm, max_shape=max_shape))
        self.bases: dict[tuple, torch.Tensor] = {}  # Step 1: computed once per (n, dtype, device)

    def basis(self, n: int, like: torch.Tensor) -> torch.Tensor:
        key = (n, like.dtype, like.device)
        if key not in self.bases:
            self.bases[key] = dct_basis(n, like.dtype, like.device)
        return self.bases[key]

    def basis_bytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.bases.values())

    def load_state_dict(self, state_dict: dict) -> None:
        """torch casts every loaded state tensor to its parameter's dtype; I indexes columns: back to long."""
        super().load_state_dict(state_dict)
        for state in self.state.values():
            if "indices" in state:
                state["indices"] = state["indices"].long()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g, state = p.grad, self.state[p]
                lowrank = p.ndim == 2 and max(p.shape) < group["max_shape"]
                if lowrank:
                    basis = self.basis(min(p.shape), p)
                    if state.get("step", 0) % group["update_proj_gap"] == 0:  # t = 0, T, 2T, …
                        s, scores = alignment(g, basis, group["ell_norm"])
                        state["indices"] = select_columns(scores, group["rank"])
                        g = s[:, state["indices"]] if right_side(p.shape) else s[state["indices"]]
                    else:
                        g = project(g, basis, state["indices"])
                if "step" not in state:
                    state.update(step=0, exp_avg=torch.zeros_like(g), exp_avg_sq=torch.zeros_like(g))
                m, v = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                bias1, bias2 = 1 - beta1 ** state["step"], 1 - beta2 ** state["step"]
                n = (m / bias1) / ((v / bias2).sqrt() + group["eps"])
                if lowrank:
                    n = project_back(n, basis, state["indices"], p.shape)
                p.mul_(1 - group["lr"] * group["weight_decay"]).add_(n, alpha=-group["lr"])
        return loss


@register(
    family="optimizer",
    paper=Paper(
        title="SVD-Free Low-Rank Adaptive Gradient Optimization for Large Language Models",
        arxiv="2505.17967",
        year=2025,
        venue="arXiv",
        authors="Modoranu, Safaryan, Schultheis, Alistarh",
        code="https://github.com/IST-DASLab/ISTA-DASLab-Optimizers",
    ),
    config=DCTLowRankConfig,
)
class DCTLowRank(OptimizerMethod):
    def build(self, named_params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        c = self.cfg
        return DCTAdamW(decay_groups(named_params, weight_decay), lr=lr, betas=(c.beta1, c.beta2), eps=c.eps,
                        weight_decay=weight_decay, rank=c.rank, update_proj_gap=c.update_proj_gap,
                        ell_norm=c.ell_norm, max_shape=c.max_shape)
