"""KaSA: Knowledge-Aware Singular-Value Adaptation of Large Language Models.

Wang, Jiang, Park, Kim, Tang. arXiv preprint 2024 (the repo's BibTeX; an ICLR 2025 acceptance is not verified here).
arXiv:2412.06071.
Reference implementation: https://github.com/juyongjiang/KaSA (main.py, peft/src/peft/tuners/lora/layer.py@500c6d5);
also PEFT ≥ 0.21 as a LoRA variant (``LoraConfig(kasa_config=KasaConfig(beta, gamma))``).

Implements
  Stage 1, knowledge-based SVD truncation: W = U Σ Vᵀ; W_world = U_{k−r} Σ_{k−r} V_{k−r}ᵀ keeps the k − r largest
           singular triplets (k = min(d_out, d_in)) and drops the r minor ("noisy, long-tail") ones; frozen;
  Stage 2, knowledge-aware singular values: ΔW = ΔU ΔΣ ΔVᵀ = B diag(s) A, scaled by α/r as in LoRA;
  Eq. (9)–(10) L2 = ‖ΔΣ‖²_F = Σ_i s_i²  (stands for ‖ΔW‖²_F when ΔU, ΔV are orthonormal);
  Eq. (11)     L3 = ‖ΔUᵀΔU − I_r‖_F + ‖ΔVᵀΔV − I_r‖_F = ‖BᵀB − I‖_F + ‖AAᵀ − I‖_F;
  objective    L = L1 (task) + β·L2 + γ·L3;   merge: W = W_world + (α/r)·B diag(s) A.
  (Equation numbers as cited by PEFT's KasaConfig; we could not read the paper body ourselves.)

Symbols: ΔU → lora_B (d_out×r), ΔΣ → diag(lora_diag), ΔVᵀ → lora_A (r×d_in), W_world → base.weight,
β → beta, γ → gamma, α → alpha.

Defaults: r = 8, α = 16, dropout 0, β = 1e-4, γ = 1e-3 on W_q, W_v: main.py's argparse defaults, which are the
RoBERTa-base CoLA run in the released logs (logs/roberta-base/*); β and γ are tuned per task (CLAIMS.md "KaSA"),
so per-task values live in the grid. Targets: main.py leaves target_modules unset, i.e. PEFT's default for
RoBERTa/BERT (query, value).

Deviations
  - L3 follows the paper's r×r form (as PEFT does). The released main.py computes ‖AᵀA − I_{d_in}‖_F +
    ‖BBᵀ − I_{d_out}‖_F (full-size Gram matrices, which cannot reach 0 for rank r < d).
  - β·L2 + γ·L3 is averaged over adapted layers, as in main.py (``/ block_num``), so that its tuned β, γ carry over;
    PEFT's ``_get_kasa_loss`` sums over layers instead.
  - k = min(d_out, d_in) as in PEFT; the released code keeps d_in − r triplets (the same for square W_q, W_v).
  - Init as in the code: A Kaiming-uniform (a = √5), B = 0, s ~ N(0, 1); the update is 0 at init, the truncation is not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from adaptbench.protocol import Adapter, fold_wrapped_layers, freeze_all, replace_module, target_linears
from adaptbench.registry import Paper, register
from methods.adapters._layers import LowRankLinear


@dataclass(frozen=True)
class KaSAConfig:
    r: int = 8  # main.py --lora_r 8 (all released GLUE/commonsense logs)
    alpha: float = 16.0  # main.py --lora_alpha 16
    dropout: float = 0.0  # main.py --lora_dropout 0.0
    beta: float = 1e-4  # β on L2, main.py --beta (per-task values: CLAIMS.md "KaSA")
    gamma: float = 1e-3  # γ on L3, main.py --gemma (sic)
    target_modules: tuple[str, ...] = ("query", "value", "q_proj", "v_proj")  # PEFT default for main.py's models

    def __post_init__(self):
        if not (isinstance(self.r, int) and self.r >= 1):
            raise ValueError(f"kasa: r must be a positive integer, got {self.r!r}")
        if not self.alpha > 0:
            raise ValueError(f"kasa: alpha must be > 0, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"kasa: dropout must be in [0, 1), got {self.dropout!r}")
        for field_name in ("beta", "gamma"):
            if not getattr(self, field_name) >= 0:
                raise ValueError(f"kasa: {field_name} must be >= 0, got {getattr(self, field_name)!r}")


def knowledge_truncation(weight: torch.Tensor, r: int) -> torch.Tensor:
    """Stage 1: W_world = Σ_{i ≤ k−r} σ_i u_i v_iᵀ, i.e. W without its r smallest singular triplets. (d_out, d_in)."""
    k = min(weight.shape)
    U, S, Vh = torch.linalg.svd(weight.detach().to(torch.float32), full_matrices=False)  # S descending
    return ((U[:, : k - r] * S[: k - r]) @ Vh[: k - r]).to(weight.dtype)


def kasa_delta(lora_A: torch.Tensor, lora_B: torch.Tensor, lora_diag: torch.Tensor, scaling: float) -> torch.Tensor:
    """Stage 2: ΔW = (α/r)·ΔU ΔΣ ΔVᵀ = (α/r)·B diag(s) A, (d_out, r)·(r,)·(r, d_in) → (d_out, d_in)."""
    return scaling * ((lora_B * lora_diag) @ lora_A)


def singular_value_regularizer(lora_diag: torch.Tensor) -> torch.Tensor:
    """Eq. (9)–(10): L2 = ‖ΔΣ‖²_F = Σ_i s_i²."""
    return (lora_diag**2).sum()


def orthogonal_regularizer(lora_A: torch.Tensor, lora_B: torch.Tensor) -> torch.Tensor:
    """Eq. (11): L3 = ‖ΔUᵀΔU − I_r‖_F + ‖ΔVᵀΔV − I_r‖_F with ΔU = B (d_out, r), ΔVᵀ = A (r, d_in)."""
    eye = torch.eye(lora_A.shape[0], device=lora_A.device, dtype=lora_A.dtype)
    return torch.linalg.matrix_norm(lora_B.T @ lora_B - eye) + torch.linalg.matrix_norm(lora_A @ lora_A.T - eye)


class KaSALinear(LowRankLinear):
    """y = W_world x + b + (α/r)·B diag(s) A dropout(x); ``base.weight`` holds the truncated, frozen W_world.
    LoRA's layer (_layers.LowRankLinear) with the trainable diagonal s between its factors."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float):
        with torch.no_grad():
            base.weight.copy_(knowledge_truncation(base.weight, r))
        super().__init__(base, r, alpha, dropout, init_a=None)  # s is drawn before A; the order fixes what a seed gives
        self.lora_diag = nn.Parameter(torch.randn(r, dtype=base.weight.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def delta_forward(self, x: torch.Tensor) -> torch.Tensor:
        # diag(s) scales the r-dim intermediate: (…, d_in) @ (d_in, r) · s @ (r, d_out)
        return ((self.dropout(x) @ self.lora_A.T) * self.lora_diag) @ self.lora_B.T * self.scaling

    def delta_weight(self) -> torch.Tensor:
        return kasa_delta(self.lora_A, self.lora_B, self.lora_diag, self.scaling)


@register(
    family="adapter",
    paper=Paper(
        title="KaSA: Knowledge-Aware Singular-Value Adaptation of Large Language Models",
        arxiv="2412.06071",
        year=2024,
        venue="arXiv preprint",
        authors="Wang, Jiang, Park, Kim, Tang",
        code="https://github.com/juyongjiang/KaSA@500c6d5",
    ),
    config=KaSAConfig,
    mergeable=True,
)
class KaSA(Adapter):
    TRAINABLE = ("*.lora_A", "*.lora_B", "*.lora_diag")
    IDENTITY_AT_INIT = False  # Stage 1 drops the r minor singular components of W before training

    def apply(self, model: nn.Module) -> nn.Module:
        freeze_all(model)
        c = self.cfg
        for name, linear in target_linears(model, c.target_modules):
            k = min(linear.out_features, linear.in_features)
            if c.r >= k:
                raise ValueError(f"kasa: r={c.r} must be < min(d_out, d_in)={k} of '{name}' so W_world keeps a triplet; lower r")
            replace_module(model, name, KaSALinear(linear, c.r, c.alpha, c.dropout))
        return model

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        """(β·ΣL2 + γ·ΣL3) / #layers, the objective's auxiliary terms averaged over layers as in main.py."""
        layers = [m for m in model.modules() if isinstance(m, KaSALinear)]
        if not layers:
            return None
        l2 = torch.stack([singular_value_regularizer(m.lora_diag) for m in layers]).sum()
        l3 = torch.stack([orthogonal_regularizer(m.lora_A, m.lora_B) for m in layers]).sum()
        return (self.cfg.beta * l2 + self.cfg.gamma * l3) / len(layers)

    def merge(self, model: nn.Module) -> nn.Module:
        """Fold (α/r)·B diag(s) A into W_world and put the plain nn.Linear back."""
        return fold_wrapped_layers(model, KaSALinear)
