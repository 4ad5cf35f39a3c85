"""Lion: EvoLved Sign Momentum, from "Symbolic Discovery of Optimization Algorithms".

Chen, Liang, Huang, Real, Wang, Pham, Dong, Luong, Hsieh, Lu, Le. NeurIPS 2023. arXiv:2302.06675.
Reference implementation: https://github.com/google/automl (lion/lion_pytorch.py).

Implements
  Alg. 2, update:    c_t = β1·m_{t−1} + (1 − β1)·g_t   (an interpolation, not the momentum itself)
  Alg. 2, update:    θ_t = θ_{t−1} − η_t·(sign(c_t) + λ·θ_{t−1})   (decoupled weight decay)
  Alg. 2, momentum:  m_t = β2·m_{t−1} + (1 − β2)·g_t   (after the update, so c_t sees m_{t−1})
  Only m is kept per parameter: half of Adam's optimizer state (§1, memory efficiency).

Symbols: η → lr, λ → weight_decay, β1 → beta1, β2 → beta2, m → state["exp_avg"], c → c.

Defaults: β1 = 0.9, β2 = 0.99 (§5 "Hyperparameter Tuning": Lion's defaults, found by the program
search; β1 = 0.95, β2 = 0.98 suggested there for training stability, e.g. for language models).
Learning rate and weight decay are not defaults here: they come from the grid's ``train:`` section.
The paper's advice (§5): because sign() gives every coordinate a unit-size step, Lion's lr should be
3–10× smaller than AdamW's, and λ 3–10× larger so that the effective decay lr·λ stays about the same.
A grid that runs Lion next to AdamW must set both accordingly.

Deviations
  - Weight decay skips biases, LayerNorm and other 1-D parameters, the convention the trainer applies
    to its AdamW baseline (adaptbench/build.py build_optimizer), so that Lion and AdamW cells differ
    only in the update rule. The paper applies λ to "θ" without this distinction.
  - sign(0) = 0 (torch.sign), so a coordinate whose interpolation is exactly 0 does not move.
  - Section numbers (§1, §5) were read from secondary sources, not checked against the paper text here;
    Alg. 2 and the defaults agree across those sources.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from adaptbench.protocol import OptimizerMethod, decay_groups
from adaptbench.registry import Paper, register


def check_hyperparameters(lr: float, beta1: float, beta2: float, weight_decay: float) -> None:
    """One-line errors naming the field, shared by the config and the optimizer's constructor."""
    if not lr > 0:
        raise ValueError(f"lion: lr must be > 0, got {lr!r}")
    for field_name, value in (("beta1", beta1), ("beta2", beta2)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"lion: {field_name} must be in [0, 1), got {value!r}")
    if not weight_decay >= 0:
        raise ValueError(f"lion: weight_decay must be >= 0, got {weight_decay!r}")


@dataclass(frozen=True)
class LionConfig:
    beta1: float = 0.9  # §5 "Hyperparameter Tuning": default β1 = 0.9 (0.95 for stability, §5)
    beta2: float = 0.99  # §5 "Hyperparameter Tuning": default β2 = 0.99 (0.98 for stability, §5)

    def __post_init__(self):
        check_hyperparameters(1.0, self.beta1, self.beta2, 0.0)


def interpolate(m: torch.Tensor, g: torch.Tensor, beta1: float) -> torch.Tensor:
    """Alg. 2: c_t = β1·m_{t−1} + (1 − β1)·g_t; shape of the parameter."""
    return m.mul(beta1).add_(g, alpha=1.0 - beta1)


def lion_update_(p: torch.Tensor, c: torch.Tensor, lr: float, weight_decay: float) -> None:
    """Alg. 2: θ_t = θ_{t−1} − η·(sign(c_t) + λ·θ_{t−1}), in place (θ_{t−1} decayed before the sign step)."""
    p.mul_(1.0 - lr * weight_decay).add_(torch.sign(c), alpha=-lr)


def momentum_(m: torch.Tensor, g: torch.Tensor, beta2: float) -> None:
    """Alg. 2: m_t = β2·m_{t−1} + (1 − β2)·g_t, in place."""
    m.mul_(beta2).add_(g, alpha=1.0 - beta2)


class LionOptimizer(torch.optim.Optimizer):
    """Alg. 2 on every parameter with a gradient; state holds one tensor (m) per parameter."""

    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0):
        check_hyperparameters(lr, betas[0], betas[1], weight_decay)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

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
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m, g = state["exp_avg"], p.grad
                c = interpolate(m, g, beta1)  # uses m_{t−1}: computed before the momentum update
                lion_update_(p, c, group["lr"], group["weight_decay"])
                momentum_(m, g, beta2)
        return loss



@register(
    family="optimizer",
    paper=Paper(
        title="Symbolic Discovery of Optimization Algorithms",
        arxiv="2302.06675",
        year=2023,
        venue="NeurIPS",
        authors="Chen, Liang, Huang, Real, Wang, Pham, Dong, Luong, Hsieh, Lu, Le",
        code="https://github.com/google/automl/tree/master/lion",
    ),
    config=LionConfig,
)
class Lion(OptimizerMethod):
    def build(self, named_params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        betas = (self.cfg.beta1, self.cfg.beta2)
        return LionOptimizer(decay_groups(named_params, weight_decay), lr=lr, betas=betas, weight_decay=weight_decay)
