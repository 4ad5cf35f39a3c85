"""Shared math for SLoRA, NLoRA and IntTune (Guo, Chang, Wu; arXiv:2502.14482, Findings of EMNLP 2025).

One paper, three registry names (slora.py, nlora.py, inttune.py); this module holds what they share so that
none of it is duplicated and none of the three imports another: the paper's metadata (PAPER), the layer, the
Nyström initialisation and the apply step of NLoRA and IntTune. Discovery skips it because of the leading underscore.

Layout. nn.Linear stores weight W (out × in) and computes x Wᵀ. The three-matrix update is, in that layout,

    ΔW = s · B N A,   B: lora_B (out × r),  N: lora_N (r × r, the "intermediate matrix"),  A: lora_A (r × in),

with s = α/r, the names and shapes of the authors' PEFT fork (TracyGuo2001/NLoRA@b086286,
peft/src/peft/tuners/lora/layer.py: ``lora_B(lora_N(lora_A(x))) * scaling``). The paper writes Y = X W
(PiSSA's convention), so its A·N·B is our (B N A)ᵀ; the factor on the input side is lora_A in both.

Nyström (NLoRA). For sketch matrices Ω (in × r) and Ψ (out × r),

    C = W Ω (out × r),   U = Ψᵀ W Ω (r × r),   R = Ψᵀ W (r × in),   W ≈ C U⁺ R   (U⁺: Moore–Penrose pseudo-inverse),

so B = C, N = U⁺ / s, A = R gives s·B N A = C U⁺ R. Column/row selection of the first r indices (Ω = I[:, :r],
Ψ = I[:, :r]) gives C = W[:, :r], U = W[:r, :r], R = W[:r, :], the slices the released code takes;
Gaussian Ω, Ψ give the randomized (generalized) Nyström approximation. If rank(W) = r and U has rank r,
C U⁺ R = W exactly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from adaptbench.protocol import fold_wrapped_layers, freeze_all, replace_module, target_linears
from adaptbench.registry import Paper
from methods.adapters._layers import AdaptedLinear, check_rank

PAPER = Paper(
    title="NLoRA: Nyström-Initiated Low-Rank Adaptation for Large Language Models",
    arxiv="2502.14482",
    year=2025,
    venue="Findings of EMNLP",
    authors="Guo, Chang, Wu",
    code="https://github.com/TracyGuo2001/NLoRA@b086286",
)

SKETCHES = ("first_r", "gaussian")

# run_nlora.sh adapts every linear layer of a block (q, k, v, o, gate, up, down); these are those layers'
# names in Llama-style, BERT/RoBERTa and DeBERTa models ("output.dense" covers attention.output.dense and the
# FFN's output.dense, never the RoBERTa head's classifier.dense or BERT's pooler.dense).
ALL_BLOCK_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                     "query", "key", "value", "query_proj", "key_proj", "value_proj",
                     "output.dense", "intermediate.dense")


def check_common(method: str, r, alpha, target_modules) -> None:
    """One-line ValueErrors naming the field, shared by the three configs."""
    if not (isinstance(r, int) and r >= 1):
        raise ValueError(f"{method}: r must be a positive integer, got {r!r}")
    if not alpha > 0:
        raise ValueError(f"{method}: alpha must be > 0, got {alpha!r}")
    if not (isinstance(target_modules, tuple) and target_modules and all(isinstance(t, str) for t in target_modules)):
        raise ValueError(f"{method}: target_modules must be a non-empty list of names, got {target_modules!r}")


def sketch_matrices(out_features: int, in_features: int, r: int, sketch: str, dtype=torch.float32):
    """Test matrices Ψ (out × r) and Ω (in × r): the first r coordinate vectors, or i.i.d. N(0, 1) entries
    (drawn from the global torch RNG, so the run seed fixes them)."""
    if sketch == "first_r":
        return torch.eye(out_features, r, dtype=dtype), torch.eye(in_features, r, dtype=dtype)
    if sketch == "gaussian":
        return torch.randn(out_features, r, dtype=dtype), torch.randn(in_features, r, dtype=dtype)
    raise ValueError(f"sketch must be one of {SKETCHES}, got {sketch!r}")


def nystrom(weight: torch.Tensor, psi: torch.Tensor, omega: torch.Tensor):
    """Nyström: W ≈ C U⁺ R with C = W Ω (out × r), U = Ψᵀ W Ω (r × r), R = Ψᵀ W (r × in); float32.

    Returns (C, U⁺, R)."""
    w = weight.detach().to(torch.float32)
    C = w @ omega
    R = psi.T @ w
    U = psi.T @ C
    return C, torch.linalg.pinv(U), R


def delta(lora_A: torch.Tensor, lora_N: torch.Tensor, lora_B: torch.Tensor, scaling: float) -> torch.Tensor:
    """ΔW = s · B N A, shape (out, in)."""
    return scaling * (lora_B @ lora_N @ lora_A)


class ThreeFactorLinear(AdaptedLinear):
    """y = W x + b + s · B N A x  (SLoRA's structure; NLoRA and IntTune only initialise/freeze differently).

    Built on _layers.AdaptedLinear rather than LowRankLinear: its parameters register in the order A, N, B."""

    def __init__(self, base: nn.Linear, r: int, alpha: float):
        super().__init__(base)
        self.r, self.scaling = r, alpha / r
        dtype = base.weight.dtype
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, dtype=dtype))
        self.lora_N = nn.Parameter(torch.empty(r, r, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, dtype=dtype))

    def delta_forward(self, x: torch.Tensor) -> torch.Tensor:
        # (…, in) → (…, r) → (…, r) → (…, out): the out × in update is never materialised
        return (x @ self.lora_A.T @ self.lora_N.T @ self.lora_B.T) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        return delta(self.lora_A, self.lora_N, self.lora_B, self.scaling)


@torch.no_grad()
def init_kaiming_zero_(layer: ThreeFactorLinear) -> None:
    """SLoRA init of the released code (slora_init): A and N Kaiming-uniform (a = √5, nn.Linear's default),
    B = 0, so s·B N A = 0 and the model starts equal to the base."""
    nn.init.kaiming_uniform_(layer.lora_A, a=math.sqrt(5))
    nn.init.kaiming_uniform_(layer.lora_N, a=math.sqrt(5))
    nn.init.zeros_(layer.lora_B)


@torch.no_grad()
def init_nystrom_(layer: ThreeFactorLinear, sketch: str, residual: bool) -> None:
    """NLoRA init: B = C, N = U⁺ / s, A = R, so that s·B N A = C U⁺ R ≈ W. With ``residual`` the frozen weight
    becomes W − C U⁺ R (the model starts equal to the base); without it W stays, as in the released code."""
    weight = layer.base.weight
    psi, omega = sketch_matrices(layer.base.out_features, layer.base.in_features, layer.r, sketch)
    C, U_pinv, R = nystrom(weight, psi, omega)
    layer.lora_B.copy_(C.to(weight.dtype))
    layer.lora_N.copy_((U_pinv / layer.scaling).to(weight.dtype))
    layer.lora_A.copy_(R.to(weight.dtype))
    if residual:
        weight.copy_((weight.to(torch.float32) - C @ U_pinv @ R).to(weight.dtype))


def apply_nystrom(method: str, cfg, model: nn.Module) -> nn.Module:
    """Freeze the model and put a Nyström-initialised ThreeFactorLinear on every target (NLoRA and IntTune)."""
    freeze_all(model)
    for name, linear in target_linears(model, cfg.target_modules):
        check_rank(method, cfg.r, name, linear)
        layer = ThreeFactorLinear(linear, cfg.r, cfg.alpha)
        init_nystrom_(layer, cfg.sketch, cfg.residual)
        replace_module(model, name, layer)
    return model


def merge_layers(model: nn.Module) -> nn.Module:
    """W + s·B N A folded into one plain nn.Linear per adapted layer."""
    return fold_wrapped_layers(model, ThreeFactorLinear)
