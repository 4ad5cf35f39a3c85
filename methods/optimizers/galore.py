"""GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection.

Zhao, Zhang, Chen, Wang, Anandkumar, Tian. ICML 2024. arXiv:2403.03507.
Reference implementation: https://github.com/jiaweizzhao/GaLore@1317b5f7 (galore_torch/adamw.py,
galore_torch/galore_projector.py; GLUE script run_glue.py@8460814c).

Implements (Alg. 2, "Adam with GaLore"; the math lives in _lowrank_projection.py)
  Alg. 2, refresh:   if t mod T = 0: U, S, V = SVD(G_t), P_t = top-r singular vectors of the smaller side
  Alg. 2, project:   R_t = P_tᵀ G_t (m < n) or G_t Q_t (m ≥ n): an r-dimensional gradient
  Alg. 2, Adam:      M_t, V_t moments of R_t (r-dimensional state), N_t = M̂_t / (√V̂_t + ε)
  Alg. 2, back:      G̃_t = α · P_t N_t (or α · N_t Q_tᵀ)
  Update:            W_t = W_{t−1} − η·(G̃_t + λ·W_{t−1})  (decoupled weight decay, AdamW)
  Only the weight matrices of the attention and MLP linear layers are projected (the paper's experiments;
  run_glue.py --lora_all_modules); every other trainable tensor (embeddings, norms, biases, the task head)
  gets plain AdamW.

Symbols: η → lr (group["lr"], so the trainer's scheduler applies), λ → weight_decay, r → rank,
T → update_proj_gap, α → scale, β1, β2, ε → beta1, beta2, eps, P/Q → state["projector"],
M, V → state["exp_avg"], state["exp_avg_sq"].

Defaults: the GLUE fine-tuning setting, the benchmark's use: r = 4 with α = 4 (Table 7: r = 4 ↔ α = 4,
r = 8 ↔ α = 2), T = 500 (jiaweizzhao/GaLore README "Benchmark 2" GLUE command: --lora_r 4 --galore_scale 4
--update_proj_gap 500). Pre-training (App. C, C4) uses α = 0.25, T = 200 and r = 128…1024 by model size;
a grid sets those through ``train.optimizer_params``. β = (0.9, 0.999), ε = 1e-8 (App. C, Adam defaults).

Deviations
  - N = M̂/(√V̂ + ε) as written in Alg. 2 (and torch.optim.Adam); the reference computes
    lr·√(1−β2ᵗ)/(1−β1ᵗ) · M/(√V + ε) with ε = 1e-6, which differs only in where ε enters.
  - Weight decay is the trainer's ``train.weight_decay``, applied as given (λ = 0 in the paper grids:
    galore_roberta_base_glue.yaml sets it on every GaLore entry, because the reference run_glue.py builds
    GaLoreAdamW(param_groups, lr=...) with its default weight_decay = 0). When λ > 0 it is applied to W_{t−1}
    (torch.optim.AdamW order) and skips biases and LayerNorm (protocol.decay_groups, as the AdamW baseline);
    the reference decays after the step, every tensor.
  - A matrix with r ≥ min(m, n) gets plain AdamW: projecting it saves nothing (the reference would still
    rotate it). So with an adapter (LoRA factors are not targeted modules) this is AdamW on the adapter.
  - Targets use PEFT's suffix rule on the module name (the reference matches substrings; the same layers
    for BERT/RoBERTa/LLaMA names).
  - As in Alg. 2 and the reference, moments are kept across projector refreshes (not reset or rotated).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from adaptbench.protocol import OptimizerMethod
from adaptbench.registry import Paper, register
from methods.optimizers._lowrank_projection import (TRANSFORMER_LINEARS, adam_direction_, check_lowrank_fields,
                                                    check_target_modules, lowrank_groups, needs_refresh, project,
                                                    project_back, top_singular_vectors)


@dataclass(frozen=True)
class GaLoreConfig:
    rank: int = 4  # r; Table 4/7 GLUE r ∈ {4, 8}; pre-training 128…1024 by model size (scripts/benchmark_c4)
    scale: float = 4.0  # α; Table 7: 4 for r = 4, 2 for r = 8; 0.25 for pre-training (App. C)
    update_proj_gap: int = 500  # T; README GLUE command 500; 200 for pre-training (App. C, §5)
    beta1: float = 0.9  # Adam β1 (App. C)
    beta2: float = 0.999  # Adam β2 (App. C)
    eps: float = 1e-8  # Adam ε (App. C)
    target_modules: tuple[str, ...] = TRANSFORMER_LINEARS  # attention + MLP linears (run_glue.py lora_all_modules)

    def __post_init__(self):
        check_lowrank_fields("galore", rank=self.rank, update_proj_gap=self.update_proj_gap, scale=self.scale,
                             beta1=self.beta1, beta2=self.beta2, eps=self.eps)
        check_target_modules("galore", self.target_modules)


class GaLoreOptimizer(torch.optim.Optimizer):
    """Alg. 2 on the groups flagged ``lowrank``; AdamW on the others. Per-parameter state: exp_avg and
    exp_avg_sq (r-dimensional for projected matrices), the projector, and the step count (a Python int).
    Subclasses change the low-rank gradient through ``precondition`` (Natural GaLore)."""

    METHOD = "galore"

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 rank: int = 4, update_proj_gap: int = 500, scale: float = 4.0):
        if not lr > 0:
            raise ValueError(f"{self.METHOD}: lr must be > 0, got {lr!r}")
        if not weight_decay >= 0:
            raise ValueError(f"{self.METHOD}: weight_decay must be >= 0, got {weight_decay!r}")
        check_lowrank_fields(self.METHOD, rank=rank, update_proj_gap=update_proj_gap, scale=scale, beta1=betas[0],
                             beta2=betas[1], eps=eps)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, rank=rank,
                        update_proj_gap=update_proj_gap, scale=scale, lowrank=False)
        super().__init__(params, defaults)

    def precondition(self, state: dict, low_rank_grad: torch.Tensor, group: dict) -> torch.Tensor:
        """The r-dimensional gradient Adam sees; GaLore uses R_t as is."""
        return low_rank_grad

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
                state, g = self.state[p], p.grad
                if not state:
                    state["step"] = 0
                if group["lowrank"]:
                    if needs_refresh(state["step"], group["update_proj_gap"]):
                        state["projector"] = top_singular_vectors(g, group["rank"])
                    g = self.precondition(state, project(g, state["projector"]), group)
                if "exp_avg" not in state:
                    state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(g), torch.zeros_like(g)
                state["step"] += 1
                direction = adam_direction_(state["exp_avg"], state["exp_avg_sq"], g, state["step"],
                                            beta1, beta2, group["eps"])
                if group["lowrank"]:
                    direction = project_back(direction, state["projector"], p.shape).mul_(group["scale"])
                p.mul_(1 - group["lr"] * group["weight_decay"]).add_(direction, alpha=-group["lr"])
        return loss


@register(
    family="optimizer",
    paper=Paper(
        title="GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection",
        arxiv="2403.03507",
        year=2024,
        venue="ICML",
        authors="Zhao, Zhang, Chen, Wang, Anandkumar, Tian",
        code="https://github.com/jiaweizzhao/GaLore@1317b5f7e589ba778d8d122f6102fda6fa7ba49e",
    ),
    config=GaLoreConfig,
)
class GaLore(OptimizerMethod):
    def build(self, named_params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        c = self.cfg
        groups = lowrank_groups(named_params, weight_decay, c.target_modules, c.rank)
        return GaLoreOptimizer(groups, lr=lr, betas=(c.beta1, c.beta2), eps=c.eps, weight_decay=weight_decay,
                               rank=c.rank, update_proj_gap=c.update_proj_gap, scale=c.scale)
