"""AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant Weights.

Heo, Chun, Oh, Han, Yun, Kim, Uh, Ha. ICLR 2021. arXiv:2006.08217.
Reference implementation: https://github.com/clovaai/AdamP (adamp/adamp.py).

Implements (Alg. 2 "AdamP", §3)
  Adam:        m_t = β1·m + (1 − β1)·g;  v_t = β2·v + (1 − β2)·g²;  p_t = m̂_t / (√v̂_t + ε)
  Projection:  Π_w(x) = x − (ŵ·x)·ŵ, ŵ = w/‖w‖: the radial (norm-increasing) part of x removed
  Condition:   q_t = Π_w(p_t) if max |cos(w, ∇w)| < δ/√dim(w), else q_t = p_t; tested per view:
               channel-wise (one row per output channel, dim = numel/out) first, then layer-wise
               (the whole tensor, dim = numel); the first view that passes is the one projected in
  Update:      w_t = w_{t−1}·(1 − η·λ·r) − η·q_t, with r = wd_ratio if projected, else 1
  1-D parameters (biases, norm gains) are never projected: they are not scale-invariant weights.

Symbols: η → lr, λ → weight_decay, δ → delta, ε → eps, β1, β2 → beta1, beta2,
m, v → state["exp_avg"], state["exp_avg_sq"], p_t → p, q_t → q, r → wd_ratio.

Defaults: δ = 0.1 (§3, "δ = 0.1" for every experiment), wd_ratio = 0.1, β = (0.9, 0.999),
ε = 1e-8 and nesterov = False (clovaai/AdamP AdamP.__init__ defaults; β and ε are Adam's, Kingma &
Ba 2015 Alg. 1). Learning rate and weight decay come from the grid's ``train:`` section.

Deviations
  - Weight decay skips biases, LayerNorm and other 1-D parameters, the convention the trainer applies
    to its AdamW baseline (adaptbench/build.py build_optimizer), so AdamP and AdamW cells differ only
    in the update rule.
  - The step counter is a Python int, so optimizer_state_bytes counts m and v only (2× the params).
  - Alg. 2 / §3 references and "δ = 0.1 in all experiments" were not checked against the paper text here
    (only its abstract was reachable); the channel-then-layer order and wd_ratio follow the official code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from adaptbench.protocol import OptimizerMethod, decay_groups
from adaptbench.registry import Paper, register


def check_hyperparameters(lr, beta1, beta2, eps, weight_decay, delta, wd_ratio) -> None:
    """One-line errors naming the field, shared by the config and the optimizer's constructor."""
    checks = (("lr", lr, lr > 0, "> 0"), ("beta1", beta1, 0 <= beta1 < 1, "in [0, 1)"),
              ("beta2", beta2, 0 <= beta2 < 1, "in [0, 1)"), ("eps", eps, eps > 0, "> 0"),
              ("weight_decay", weight_decay, weight_decay >= 0, ">= 0"), ("delta", delta, delta > 0, "> 0"),
              ("wd_ratio", wd_ratio, 0 <= wd_ratio <= 1, "in [0, 1]"))
    for field_name, value, ok, rule in checks:
        if not ok:
            raise ValueError(f"adamp: {field_name} must be {rule}, got {value!r}")


@dataclass(frozen=True)
class AdamPConfig:
    beta1: float = 0.9  # Adam's β1 (Kingma & Ba Alg. 1), clovaai/AdamP default
    beta2: float = 0.999  # Adam's β2, clovaai/AdamP default
    eps: float = 1e-8  # Adam's ε; also guards the norms in cos and Π (clovaai/AdamP)
    delta: float = 0.1  # δ of the scale-invariance test, §3: δ = 0.1 in all experiments
    wd_ratio: float = 0.1  # decay multiplier on projected weights, clovaai/AdamP default
    nesterov: bool = False  # clovaai/AdamP option; the paper's Alg. 2 is the plain-momentum form

    def __post_init__(self):
        check_hyperparameters(1.0, self.beta1, self.beta2, self.eps, 0.0, self.delta, self.wd_ratio)
        if not isinstance(self.nesterov, bool):
            raise ValueError(f"adamp: nesterov must be true or false, got {self.nesterov!r}")


def channel_view(x: torch.Tensor) -> torch.Tensor:
    """(C_out, ...) → (C_out, numel/C_out): one row per output channel."""
    return x.reshape(x.shape[0], -1)


def layer_view(x: torch.Tensor) -> torch.Tensor:
    """(...) → (1, numel): the whole tensor as one row."""
    return x.reshape(1, -1)


def abs_cosine(w: torch.Tensor, g: torch.Tensor, eps: float) -> torch.Tensor:
    """§3: |cos(w, ∇w)| per row of a view, (rows, d) × (rows, d) → (rows,)."""
    return (w * g).sum(1).abs() / (w.norm(dim=1) * g.norm(dim=1)).clamp_min(eps)


def project(p: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """§3: Π_w(p) = p − (ŵ·p)·ŵ per row, ŵ = w/(‖w‖ + ε); (rows, d) → (rows, d)."""
    w_hat = w / (w.norm(dim=1, keepdim=True) + eps)
    return p - (w_hat * p).sum(1, keepdim=True) * w_hat


def projected_direction(p, w, g, delta: float, eps: float) -> tuple[torch.Tensor, bool]:
    """Alg. 2: q_t = Π_w(p_t) in the first view (channel, then layer) where max|cos| < δ/√dim, else p_t."""
    for view in (channel_view, layer_view):
        w_v = view(w)
        if abs_cosine(w_v, view(g), eps).max() < delta / math.sqrt(w_v.shape[1]):
            return project(view(p), w_v, eps).reshape(p.shape), True
    return p, False


class AdamPOptimizer(torch.optim.Optimizer):
    """Alg. 2 on every parameter with a gradient; state holds m and v per parameter."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 delta=0.1, wd_ratio=0.1, nesterov=False):
        check_hyperparameters(lr, betas[0], betas[1], eps, weight_decay, delta, wd_ratio)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        delta=delta, wd_ratio=wd_ratio, nesterov=nesterov)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps = group["lr"], group["eps"]
            for w in group["params"]:
                if w.grad is None:
                    continue
                g, state = w.grad, self.state[w]
                if not state:
                    state.update(step=0, exp_avg=torch.zeros_like(w), exp_avg_sq=torch.zeros_like(w))
                m, v = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                bias1, bias2 = 1 - beta1 ** state["step"], 1 - beta2 ** state["step"]
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                # p_t = m̂/(√v̂ + ε), in the same order of operations as torch.optim.Adam
                numerator = beta1 * m + (1 - beta1) * g if group["nesterov"] else m
                p = numerator / (v.sqrt() / math.sqrt(bias2)).add_(eps) / bias1
                projected = False
                if w.ndim > 1:  # 1-D parameters are never projected
                    p, projected = projected_direction(p, w, g, group["delta"], eps)
                ratio = group["wd_ratio"] if projected else 1.0
                w.mul_(1 - lr * group["weight_decay"] * ratio).add_(p, alpha=-lr)
        return loss



@register(
    family="optimizer",
    paper=Paper(
        title="AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant Weights",
        arxiv="2006.08217",
        year=2021,
        venue="ICLR",
        authors="Heo, Chun, Oh, Han, Yun, Kim, Uh, Ha",
        code="https://github.com/clovaai/AdamP",
    ),
    config=AdamPConfig,
)
class AdamP(OptimizerMethod):
    def build(self, named_params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        c = self.cfg
        return AdamPOptimizer(decay_groups(named_params, weight_decay), lr=lr, betas=(c.beta1, c.beta2),
                              eps=c.eps, weight_decay=weight_decay, delta=c.delta, wd_ratio=c.wd_ratio,
                              nesterov=c.nesterov)
