"""LaMDA++: LaMDA with spectrum-based adaptive rank allocation.

Azizi, Kundu, Pedram. "LaMDA: Large Model Fine-Tuning via Spectrally Decomposed Low-Dimensional Adaptation",
Findings of EMNLP 2024. arXiv:2406.12832 (LaMDA++ is the paper's enhancement of LaMDA).
Reference implementation: https://github.com/ArminAzizi98/LaMDA@78faf18 releases LaMDA only; no LaMDA++ code.

Implements (equation numbers are this module's own; the abstract says only: "a lite-weight adaptive rank
allocation for the LoRA path via normalized spectrum analysis of pre-trained model weights")
  Eq. (1)–(3)  LaMDA's path, spectral initialisation and gradual PMB freezing (_lamda_math.py, as lamda.py), each
               layer at its own rank r_l, all layers completely frozen at the same step t_i = ⌈η·T⌉;
  Eq. (4)      normalized energy score of a target weight W_l with singular values σ_{l,1} ≥ σ_{l,2} ≥ …:
               e_l = Σ_{i ≤ r} σ_{l,i}² / Σ_i σ_{l,i}², the share of W_l's spectral energy in its top-r directions
               (UNVERIFIED form);
  Eq. (5)      ranks proportional to the scores under a total budget: r_l ≈ R · e_l / Σ_j e_j with R = r · L
               over L layers (the total rank of uniform LaMDA, Σ_l min(r, d_l) where layers are narrower than r;
               UNVERIFIED), rounded by largest remainder so Σ_l r_l = R exactly, each r_l within
               [r_min, min(d_out, d_in)] (UNVERIFIED: higher energy → higher rank).
Computed once from the pre-trained weights, before training ("lite-weight": no gradients, no data).

Symbols: e_l → energy_score (with r = the config's mean rank r), R → rank_budget, r_l → LaMDALinear.r,
r_min → r_min; others as in lamda.py.

Defaults: those of LaMDA (lamda.py: r = 64, α = 16, η = 0.3, all linear projections), budget r · L.

Deviations
  - The energy score, its normalisation and the allocation rule are reconstructed from the abstract (the paper
    body was not reachable and no code is released); each is a named function below so that it can be corrected
    in one place once the paper is checked.
  - Scaling is α / r_l per layer (PEFT's convention for per-layer ranks).
  - All deviations of lamda.py apply.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from adaptbench.protocol import Adapter, fold_wrapped_layers, freeze_all, replace_module, target_linears
from adaptbench.registry import Paper, register
from methods.adapters._lamda_math import ALL_LINEAR, LaMDALinear, check_common, freeze_after, updated_parameters


@dataclass(frozen=True)
class LaMDAPPConfig:
    r: int = 64  # mean rank; lamda.py (train_clm.py --rank 64)
    alpha: float = 16.0  # lamda.py (train_clm.py --lora_alpha 16)
    eta: float = 0.3  # lamda.py (custom_trainer.py eta=0.3)
    rank_budget: int | None = None  # R; None: Σ_l min(r, d_l), the total rank of uniform LaMDA (UNVERIFIED)
    r_min: int = 1  # every adapted layer keeps at least this rank
    target_modules: tuple[str, ...] = ALL_LINEAR  # lamda.py

    def __post_init__(self):
        check_common("lamda_pp", self)
        if self.rank_budget is not None and not (isinstance(self.rank_budget, int) and self.rank_budget >= 1):
            raise ValueError(f"lamda_pp: rank_budget must be null or a positive integer, got {self.rank_budget!r}")
        if not (isinstance(self.r_min, int) and not isinstance(self.r_min, bool) and self.r_min >= 1):
            raise ValueError(f"lamda_pp: r_min must be a positive integer, got {self.r_min!r}")


def energy_score(singular_values: torch.Tensor, r: int) -> float:
    """Eq. (4): e = Σ_{i ≤ r} σ_i² / Σ_i σ_i² for σ in descending order; in [0, 1]."""
    energy = singular_values.detach().double() ** 2
    return float(energy[:r].sum() / energy.sum())


def allocate_ranks(scores: list[float], budget: int, caps: list[int], r_min: int) -> list[int]:
    """Eq. (5): ranks ∝ scores summing to ``budget``, each in [r_min, cap]: floor of the proportional share,
    then single ranks by largest remainder (added where the share is most under-served, removed where least)."""
    if not len(scores) * r_min <= budget <= sum(caps):
        raise ValueError(f"lamda_pp: rank_budget = {budget} must lie in [{len(scores) * r_min}, {sum(caps)}] "
                         f"(r_min × {len(scores)} layers, Σ min(d_out, d_in)); change rank_budget or r_min")
    total = sum(scores)
    ideal = [budget * s / total if total > 0 else budget / len(scores) for s in scores]
    ranks = [min(cap, max(r_min, int(x))) for x, cap in zip(ideal, caps)]
    while sum(ranks) < budget:
        i = max((i for i in range(len(ranks)) if ranks[i] < caps[i]), key=lambda i: ideal[i] - ranks[i])
        ranks[i] += 1
    while sum(ranks) > budget:
        i = min((i for i in range(len(ranks)) if ranks[i] > r_min), key=lambda i: ideal[i] - ranks[i])
        ranks[i] -= 1
    return ranks


@register(
    family="adapter",
    paper=Paper(
        title="LaMDA: Large Model Fine-Tuning via Spectrally Decomposed Low-Dimensional Adaptation",
        arxiv="2406.12832",
        year=2024,
        venue="Findings of EMNLP",
        authors="Azizi, Kundu, Pedram",
        code="https://github.com/ArminAzizi98/LaMDA@78faf18",
    ),
    config=LaMDAPPConfig,
    mergeable=True,
)
class LaMDAPP(Adapter):
    TRAINABLE = ("*.lamda_S", "*.lamda_B")

    def ranks(self, model: nn.Module) -> dict[str, int]:
        """Eq. (4)–(5) on the target layers of an unadapted model: {qualified name: r_l}."""
        c = self.cfg
        targets = target_linears(model, c.target_modules)
        caps = [min(linear.weight.shape) for _, linear in targets]
        scores = [energy_score(torch.linalg.svdvals(linear.weight.detach().double()), c.r) for _, linear in targets]
        budget = c.rank_budget if c.rank_budget is not None else sum(min(c.r, cap) for cap in caps)
        return dict(zip([n for n, _ in targets], allocate_ranks(scores, budget, caps, c.r_min)))

    def apply(self, model: nn.Module) -> nn.Module:
        freeze_all(model)
        for name, r_l in self.ranks(model).items():
            replace_module(model, name, LaMDALinear(model.get_submodule(name), r_l, self.cfg.alpha))
        return model

    def before_step(self, model: nn.Module, step: int, total_steps: int) -> None:
        """Eq. (3) for the ``step`` steps already done. Within a run this changes nothing (``on_step`` froze
        them); after a resume it re-freezes the columns, since the frozen count is no tensor a checkpoint holds."""
        freeze_after(model, step, total_steps, self.cfg.eta)

    def on_step(self, model: nn.Module, step: int, total_steps: int) -> dict[str, float] | None:
        """Eq. (3) after optimizer step ``step`` (t = step + 1); when columns froze, logs the entries still updated."""
        if freeze_after(model, step + 1, total_steps, self.cfg.eta):
            return {"updated_parameters": float(updated_parameters(model))}
        return None

    def merge(self, model: nn.Module) -> nn.Module:
        return fold_wrapped_layers(model, LaMDALinear)
