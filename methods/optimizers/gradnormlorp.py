"""GradNormLoRP: Gradient Weight-normalized Low-rank Projection for Efficient LLM Training.

Huang, Shen, Zhu, Rudinac, Kanoulas. AAAI 2025. arXiv:2412.19616.
Reference implementation (GradNormLoRP/LowRankWeightNormAdamW.py, test_fine.py/.sh @4033ee2):
https://github.com/Jhhuangkay/Gradient-Weight-normalized-Low-rank-Projection-for-Efficient-LLM-Training

Implements
  Weight normalisation  w = δ·v/‖v‖ per output unit: W = diag(m)·V/‖V‖_row, m ∈ R^{d_out} (the
                        paper's ‖·‖_c, the DoRA norm over each output vector), done by prepare_model;
                        at init V = W0 and m = ‖W0‖_row, so W = W0 exactly.
  Gradients             ∇_m = ŵ·∇_W, ∇_V = (m/‖v‖)·(∇_W − (ŵ·∇_W)ŵ) per row (autograd; Salimans & Kingma).
  Projection            D̃_t = P_t·η_t(P_tᵀ D_t)·α with P_t the top-r singular vectors of D_t = ∇_V on the
                        smaller side, recomputed every T steps (GaLore's one-sided form of the paper's
                        U_t η_t(U_tᵀ D_t V_t) V_tᵀ); η_t = Adam, moments kept in the r-dim space.
  8-bit variant         Adam moments stored as block-wise 8-bit codes (eight_bit=True).

Symbols: δ → magnitude (m), v → direction (V), r → rank, T → update_proj_gap, α → scale,
P_t → state["projector"], η_t → Adam(beta1, beta2, eps).

Defaults: r = 8 (abstract: RoBERTa GLUE at rank 8), T = 500 and α = 4 (reference test_fine.sh,
"update_proj_gap 500, galore_scale 4"), eps = 1e-6 (reference LowRankWeightNormAdamW), β = (0.9, 0.999);
targets: the attention and MLP linears of every block (test_fine.py ``--lora_all_modules``), never the
pooler or the task head. Equation numbers are not given: only the abstract and a summary of the method
section (w = δ·v/‖v‖; W = M·(W0 + IJ)/‖W0 + IJ‖_c; D̃_t = U_t η_t(U_tᵀ D_t V_t) V_tᵀ) were readable here.

Deviations
  - One-sided projection (GaLore "std", as the reference code) rather than the two-sided U(·)V form.
  - ∇_V is the exact weight-norm gradient from autograd; the reference optimizer uses grad·g/‖v‖ and
    drops the radial term. The magnitude is 1-D, so decay_groups gives it no weight decay.
  - Adam is Kingma & Ba's m̂/(√v̂ + ε) with decoupled decay applied before the update (torch AdamW order).
  - 8-bit: no bitsandbytes (CPU). Every moment (projected or not) is stored as uint8 codes into a fixed
    log-spaced codebook (signed for m, 10⁻⁷..1; unsigned for v, 10⁻¹⁴..1) with one fp32 absmax per block of
    2048 (Dettmers et al. 2022, arXiv:2110.02861); bnb's dynamic tree map is replaced by this simpler map,
    a positive v never rounds to 0, and the projector P_t stays in full precision.
  - The paper's low-rank weight update W0 + IJ is not separate: the projected direction update is it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from adaptbench.models import HEAD_PREFIXES
from adaptbench.protocol import OptimizerMethod, decay_groups, fold_wrapped_layers, replace_module, target_linears
from adaptbench.registry import Paper, register

# test_fine.py --lora_all_modules: BERT-family "query, value, key, intermediate.dense, output.dense", else LLaMA's
ALL_LINEARS = ("query", "key", "value", "intermediate.dense", "output.dense", "q_proj", "k_proj", "v_proj", "o_proj",
               "gate_proj", "up_proj", "down_proj")
SIGNED_DECADES, UNSIGNED_DECADES = 7.0, 14.0  # codebook ranges: |m|/absmax ≥ 1e-7, v/absmax ≥ 1e-14


@dataclass(frozen=True)
class GradNormLoRPConfig:
    rank: int = 8  # abstract / §Experiments: GLUE with rank 8 (reference test_fine.sh uses 4)
    update_proj_gap: int = 500  # T, reference test_fine.sh "update_proj_gap 500"
    scale: float = 4.0  # α, reference test_fine.sh "galore_scale 4" (pre-training: 0.25)
    beta1: float = 0.9  # Adam (reference default)
    beta2: float = 0.999  # Adam (reference default)
    eps: float = 1e-6  # reference LowRankWeightNormAdamW default
    target_modules: tuple[str, ...] = ALL_LINEARS  # "lora_all_modules" in the reference scripts
    eight_bit: bool = False  # the paper's 8-bit GradNormLoRP
    quant_block: int = 2048  # block size of the 8-bit moments (Dettmers et al. 2022)

    def __post_init__(self):
        for name in ("rank", "update_proj_gap", "quant_block"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"gradnormlorp: {name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("scale", "eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"gradnormlorp: {name} must be > 0, got {getattr(self, name)!r}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"gradnormlorp: {name} must be in [0, 1), got {getattr(self, name)!r}")
        if not isinstance(self.eight_bit, bool):
            raise ValueError(f"gradnormlorp: eight_bit must be true or false, got {self.eight_bit!r}")


def weight_norm(magnitude: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """w = δ·v/‖v‖ per output row: (d_out,), (d_out, d_in) → (d_out, d_in)."""
    return magnitude[:, None] * direction / direction.norm(dim=1, keepdim=True)


def projector(grad: torch.Tensor, rank: int) -> torch.Tensor:
    """P_t: top-r right singular vectors (d_in, r) if d_out ≥ d_in, else left ones (d_out, r)."""
    exact = grad if grad.dtype in (torch.float32, torch.float64) else grad.float()  # no SVD in half precision
    u, _, vh = torch.linalg.svd(exact, full_matrices=False)
    r = min(rank, min(grad.shape))
    return (vh[:r].T if grad.shape[0] >= grad.shape[1] else u[:, :r]).to(grad.dtype)


def project(grad: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """P_tᵀ D_t on the smaller side: (d_out, d_in) → (d_out, r) or (r, d_in)."""
    return grad @ p if grad.shape[0] >= grad.shape[1] else p.T @ grad


def project_back(low: torch.Tensor, p: torch.Tensor, full_shape: torch.Size, scale: float) -> torch.Tensor:
    """α·P_t·N_t back to (d_out, d_in)."""
    return scale * (low @ p.T if full_shape[0] >= full_shape[1] else p @ low)


@functools.lru_cache(maxsize=2)
def codebook(signed: bool) -> torch.Tensor:
    """Sorted 8-bit code values in [−1, 1] (signed, 255 codes) or [0, 1] (unsigned, 256 codes)."""
    if signed:
        levels = torch.logspace(-SIGNED_DECADES, 0.0, 127, dtype=torch.float64)
        return torch.cat([-levels.flip(0), torch.zeros(1, dtype=torch.float64), levels]).float()
    levels = torch.logspace(-UNSIGNED_DECADES, 0.0, 255, dtype=torch.float64)
    return torch.cat([torch.zeros(1, dtype=torch.float64), levels]).float()


def quantize(x: torch.Tensor, signed: bool, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Block-wise absmax 8-bit: x → (uint8 codes (numel,), float32 absmax (⌈numel/block⌉,))."""
    flat = F.pad(x.detach().float().flatten(), (0, (-x.numel()) % block)).view(-1, block)
    absmax = flat.abs().amax(1).clamp_min(torch.finfo(torch.float32).tiny)
    normed, table = flat / absmax[:, None], codebook(signed).to(x.device)
    codes = torch.bucketize(normed, (table[1:] + table[:-1]) / 2)  # nearest code
    if not signed:  # a positive second moment never becomes 0 (that would divide the step by ε)
        codes = torch.where(normed > 0, codes.clamp_min(1), codes)
    return codes.to(torch.uint8).flatten()[: x.numel()], absmax


def dequantize(codes: torch.Tensor, absmax: torch.Tensor, signed: bool, block: int, shape) -> torch.Tensor:
    """Inverse of ``quantize``: codebook value × its block's absmax, reshaped to ``shape``."""
    values = codebook(signed).to(codes.device)[codes.long()]
    return (values * absmax.repeat_interleave(block)[: codes.numel()]).view(shape)


class WeightNormLinear(nn.Module):
    """y = x·(diag(m)·V/‖V‖_row)ᵀ + b; m and V start from W0, so the layer computes what W0 did."""

    def __init__(self, base: nn.Linear):
        super().__init__()
        w = base.weight.detach()
        self.magnitude = nn.Parameter(w.norm(dim=1).clone(), requires_grad=base.weight.requires_grad)
        self.direction = nn.Parameter(w.clone(), requires_grad=base.weight.requires_grad)
        self.bias = base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, weight_norm(self.magnitude, self.direction), self.bias)

    @torch.no_grad()
    def merged_linear(self) -> nn.Linear:
        out, inp = self.direction.shape
        linear = nn.Linear(inp, out, bias=self.bias is not None, dtype=self.direction.dtype,
                           device=self.direction.device)
        linear.weight.copy_(weight_norm(self.magnitude, self.direction))
        linear.bias = self.bias
        return linear


class GradNormLoRPAdamW(torch.optim.Optimizer):
    """Adam with decoupled decay; groups with ``rank`` run it on P_tᵀ∇ (the directions)."""

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, rank=None,
                 update_proj_gap=500, scale=4.0, eight_bit=False, quant_block=2048):
        if not lr > 0:
            raise ValueError(f"gradnormlorp: lr must be > 0, got {lr!r}")
        if not weight_decay >= 0:
            raise ValueError(f"gradnormlorp: weight_decay must be >= 0, got {weight_decay!r}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, rank=rank,
                                      update_proj_gap=update_proj_gap, scale=scale))
        self.eight_bit, self.quant_block = eight_bit, quant_block

    def _moments(self, state, shape):
        if not self.eight_bit:
            return state["exp_avg"], state["exp_avg_sq"]
        return (dequantize(state["exp_avg"], state["exp_avg_absmax"], True, self.quant_block, shape),
                dequantize(state["exp_avg_sq"], state["exp_avg_sq_absmax"], False, self.quant_block, shape))

    def _store(self, state, m, v):
        if self.eight_bit:
            state["exp_avg"], state["exp_avg_absmax"] = quantize(m, True, self.quant_block)
            state["exp_avg_sq"], state["exp_avg_sq_absmax"] = quantize(v, False, self.quant_block)

    def load_state_dict(self, state_dict: dict) -> None:
        """torch casts every loaded state tensor to its parameter's dtype; 8-bit codes go back to uint8."""
        super().load_state_dict(state_dict)
        if self.eight_bit:
            for state in self.state.values():
                for key in ("exp_avg", "exp_avg_sq"):
                    if key in state:
                        state[key] = state[key].to(torch.uint8)

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
                lowrank = group["rank"] is not None and p.ndim == 2
                if lowrank:
                    if state.get("step", 0) % group["update_proj_gap"] == 0:  # P_t at t = 0, T, 2T, …
                        state["projector"] = projector(g, group["rank"])
                    g = project(g, state["projector"])
                if "step" not in state:
                    state["step"] = 0
                    state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(g), torch.zeros_like(g)
                    self._store(state, state["exp_avg"], state["exp_avg_sq"])  # 8-bit: to codes
                m, v = self._moments(state, g.shape)
                state["step"] += 1
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                self._store(state, m, v)
                bias1, bias2 = 1 - beta1 ** state["step"], 1 - beta2 ** state["step"]
                n = (m / bias1) / ((v / bias2).sqrt() + group["eps"])
                if lowrank:
                    n = project_back(n, state["projector"], p.shape, group["scale"])
                p.mul_(1 - group["lr"] * group["weight_decay"]).add_(n, alpha=-group["lr"])
        return loss


@register(
    family="optimizer",
    paper=Paper(
        title="Gradient Weight-normalized Low-rank Projection for Efficient LLM Training",
        arxiv="2412.19616",
        year=2025,
        venue="AAAI",
        authors="Huang, Shen, Zhu, Rudinac, Kanoulas",
        code="https://github.com/Jhhuangkay/Gradient-Weight-normalized-Low-rank-Projection-for-Efficient-LLM-Training",
    ),
    config=GradNormLoRPConfig,
)
class GradNormLoRP(OptimizerMethod):
    TRAINABLE = ("*.magnitude", "*.direction")

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """W → (m, V) on every targeted nn.Linear outside the task head; deterministic (no randomness)."""
        for name, linear in target_linears(model, self.cfg.target_modules):
            if not name.startswith(HEAD_PREFIXES):
                replace_module(model, name, WeightNormLinear(linear))
        return model

    def build(self, named_params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        c, named = self.cfg, list(named_params)
        directions = [p for n, p in named if n.endswith(".direction") and p.ndim == 2]
        ids = {id(p) for p in directions}
        groups = [{"params": directions, "weight_decay": weight_decay, "rank": c.rank}] if directions else []
        groups += decay_groups([(n, p) for n, p in named if id(p) not in ids], weight_decay)
        return GradNormLoRPAdamW(groups, lr=lr, betas=(c.beta1, c.beta2), eps=c.eps, weight_decay=weight_decay,
                                 update_proj_gap=c.update_proj_gap, scale=c.scale, eight_bit=c.eight_bit,
                                 quant_block=c.quant_block)


def merge(model: nn.Module) -> nn.Module:
    """Fold every WeightNormLinear into the plain nn.Linear it computes (no inference overhead)."""
    return fold_wrapped_layers(model, WeightNormLinear)
