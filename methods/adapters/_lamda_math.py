"""The LaMDA layer and its schedule, shared by LaMDA (lamda.py) and LaMDA++ (lamda_pp.py).

Azizi, Kundu, Pedram. "LaMDA: Large Model Fine-Tuning via Spectrally Decomposed Low-Dimensional Adaptation",
Findings of EMNLP 2024. arXiv:2406.12832; reference implementation https://github.com/ArminAzizi98/LaMDA@78faf18.
Equation numbers are lamda.py's own (the paper body was not reachable); lamda.py's docstring states the
sources, symbols and deviations of everything here. Discovery skips this file because of the leading underscore.

  Eq. (1)  y = W_res x + b + s · B S A x: LaMDALinear (A frozen buffer, S and B trainable);
  Eq. (2)  spectral initialisation A = Vh_r, S = Σ_r / s, B = U_r, W_res = W − s·B S A: spectral_init;
  Eq. (3)  gradual freezing of PMB, n(t) = min(r, ⌊r·t / t_i⌋) components after t steps: frozen_components,
           freeze_after.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from methods.adapters._layers import AdaptedLinear

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj",  # train_clm.py
              "query", "key", "value", "query_proj", "key_proj", "value_proj", "intermediate.dense", "output.dense")


def check_common(method: str, c) -> None:
    """One-line ValueErrors naming the field, for the fields LaMDA's and LaMDA++'s configs share."""
    if not (isinstance(c.r, int) and not isinstance(c.r, bool) and c.r >= 1):
        raise ValueError(f"{method}: r must be a positive integer, got {c.r!r}")
    if not c.alpha > 0:
        raise ValueError(f"{method}: alpha must be > 0, got {c.alpha!r}")
    if not 0 < c.eta <= 1:
        raise ValueError(f"{method}: eta must be in (0, 1] (the fraction of training after which PMB is frozen), "
                         f"got {c.eta!r}")
    if not (isinstance(c.target_modules, tuple) and c.target_modules
            and all(isinstance(t, str) and t for t in c.target_modules)):
        raise ValueError(f"{method}: target_modules must be a non-empty list of module-name suffixes, "
                         f"got {c.target_modules!r}")


def spectral_init(weight: torch.Tensor, r: int, scaling: float):
    """Eq. (2): from W = U Σ Vᵀ (float64): A = Vh_r (r, d_in), S = Σ_r / s (r, r), B = U_r (d_out, r) and the frozen
    residual W − s·B S A (d_out, d_in); cast back to the weight dtype."""
    U, S, Vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    A, core, B = Vh[:r], torch.diag(S[:r] / scaling), U[:, :r]
    residual = weight.detach().double() - scaling * (B @ core @ A)
    return tuple(t.to(weight.dtype) for t in (A, core, B, residual))


def frozen_components(steps_done: int, total_steps: int, r: int, eta: float) -> int:
    """Eq. (3): n(t) = min(r, ⌊r·t / t_i⌋) leading PMB components frozen after t optimizer steps, t_i = ⌈η·T⌉."""
    t_i = max(1, math.ceil(eta * total_steps))
    return min(r, (r * steps_done) // t_i)


class LaMDALinear(AdaptedLinear):
    """y = W_res x + b + s · B S A x  (Eq. 1), A frozen, the first ``n_frozen`` columns of B frozen."""

    def __init__(self, base: nn.Linear, r: int, alpha: float):
        super().__init__(base)
        self.r = min(r, base.out_features, base.in_features)
        self.scaling = alpha / self.r
        A, core, B, residual = spectral_init(base.weight, self.r, self.scaling)
        with torch.no_grad():
            base.weight.copy_(residual)
        self.register_buffer("lamda_A", A.contiguous())  # PMA: frozen from the start
        self.lamda_S = nn.Parameter(core)
        self.lamda_B = nn.Parameter(B.contiguous())
        self.register_buffer("b_frozen", torch.zeros_like(self.lamda_B), persistent=False)  # frozen columns of B
        self.n_frozen = 0

    def pmb(self) -> torch.Tensor:
        """B with gradients only to its unfrozen columns: the forward value is B itself."""
        if self.n_frozen == 0:
            return self.lamda_B
        if self.n_frozen >= self.r:  # PMB completely frozen: only S trains
            return self.lamda_B.detach()
        head, tail = self.lamda_B[:, : self.n_frozen], self.lamda_B[:, self.n_frozen:]
        return torch.cat([head.detach(), tail], dim=1)

    def delta_forward(self, x: torch.Tensor) -> torch.Tensor:
        # (…, d_in) → (…, r) → (…, r) → (…, d_out): the activations kept for backward are r-dimensional
        return (x @ self.lamda_A.T @ self.lamda_S.T @ self.pmb().T) * self.scaling

    @torch.no_grad()
    def freeze_up_to_(self, n: int) -> int:
        """Eq. (3): restore the already frozen columns (undoing any optimizer drift), freeze columns up to n.
        Returns how many columns this call froze."""
        self.lamda_B[:, : self.n_frozen] = self.b_frozen[:, : self.n_frozen]
        if n <= self.n_frozen:
            return 0
        self.b_frozen[:, self.n_frozen: n] = self.lamda_B[:, self.n_frozen: n]
        newly, self.n_frozen = n - self.n_frozen, n
        return newly

    def updated_parameters(self) -> int:
        """Entries that still receive gradients: S (r²) and the unfrozen columns of B (d_out per column)."""
        return self.lamda_S.numel() + self.lamda_B.shape[0] * (self.r - self.n_frozen)

    def delta_weight(self) -> torch.Tensor:
        """Eq. (1): ΔW = s · B S A, shape (d_out, d_in)."""
        return self.scaling * (self.lamda_B @ self.lamda_S @ self.lamda_A)


def updated_parameters(model: nn.Module) -> int:
    """Σ over LaMDA layers of the entries still being updated (the paper counts "parameter updates")."""
    return sum(m.updated_parameters() for m in model.modules() if isinstance(m, LaMDALinear))


def freeze_after(model: nn.Module, steps_done: int, total_steps: int, eta: float) -> int:
    """Eq. (3) for every LaMDA layer once t = ``steps_done`` optimizer steps are done: the frozen columns of B are
    restored and the first n(t) frozen. Returns the number of PMB columns this call froze, over all layers."""
    return sum(m.freeze_up_to_(frozen_components(steps_done, total_steps, m.r, eta))
               for m in model.modules() if isinstance(m, LaMDALinear))
