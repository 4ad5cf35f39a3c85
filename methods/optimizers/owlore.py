"""OwLore: Outlier-weighed Layerwise Sampled Low-Rank Projection for Memory-Efficient LLM Fine-tuning.

Li, Yin, Gao, Liu. arXiv preprint, 2024 (v3 retitled "Outlier-weighed Layerwise Sampling for LLM
Fine-tuning", OWS). arXiv:2405.18380.
Reference implementation: https://github.com/pixeli99/OwLore@c458d7ab (src/lmflow/pipeline/finetuner.py,
DynamicLayerActivationCallback and the GaLore branch; owlore_scripts/run_owlore_low_rank.sh).

Implements (section and equation numbers not checked: the paper text was not reachable here)
  Outlier ratio (HT-SR, after OWL's layerwise outlier distribution), per layer ℓ:
      D_ℓ = #{w ∈ W_ℓ : |w| > M · mean_{W_ℓ} |w|} / |W_ℓ|, W_ℓ = every weight matrix of block ℓ
  Sampling probabilities:  p_ℓ = D_ℓ / Σ_j D_j  (more outliers → "better trained" → sampled more often)
  Every K steps (from step 0) γ distinct layers are drawn with probabilities p (successive sampling without
  replacement, numpy.random.choice(replace=False, p) in the reference); the others are frozen
  (requires_grad = False, so no gradients are computed for them). Parameters outside the numbered layers
  (embeddings, pooler, task head) always train.
  Sampled layers train with GaLore (galore.py, Alg. 2 of arXiv:2403.03507) on their attention and MLP
  weight matrices, AdamW on the rest.

Symbols: γ → gamma, K → period, M → outlier_threshold, D_ℓ → outlier_ratio, p_ℓ → probabilities;
r, T, α, β1, β2, ε as in galore.py.

Defaults: γ = 5, K = 50 (run_owlore_low_rank.sh: lisa_activated_layers=5, lisa_interval_steps 50);
r = 256, T = 100, α = 1.0 and GaLoreAdamW's β = (0.9, 0.999), ε = 1e-6 (finetuner.py GaLore branch);
M = 13 is inferred from the reference's cached ratios file name (metric_cache/llama2_7b_ratio_13.txt), UNVERIFIED.

Deviations
  - Weight decay is the trainer's ``train.weight_decay``, applied as given to the sampled layers (as galore.py:
    biases and LayerNorm skipped); the reference finetuner.py builds GaLoreAdamW(param_groups, lr=...) with its
    default weight_decay = 0, so an OwLore paper grid sets train.weight_decay: 0 (optimizers_minilm_glue.yaml,
    the grid that runs OwLore today, does).
  - D_ℓ uses |w| alone; OWL and the reference's cached ratios score |W_ij|·‖X_j‖₂ with calibration
    activations (data the optimizer does not see).
  - If every ratio is 0 (e.g. a small random model with M = 13) the sampling is uniform; a layer with
    D_ℓ = 0 is never sampled otherwise, and γ is capped by the number of layers with p_ℓ > 0.
  - A layer that leaves the sample loses its optimizer state (moments, projector); the reference keeps it.
    Dropping it makes the optimizer state that of the γ sampled layers, the memory the paper reports.
  - Ratios come from the whole model when the trainer calls ``prepare_model`` (frozen base weights
    included, so they work under an adapter), else from the trainable matrices ``build`` receives.
  - The sampling RNG is its own generator seeded with torch.initial_seed() (the run's seed), so it does
    not shift the model's dropout stream. Its state, the update count and the active layers are part of
    ``state_dict()``, so a resumed run samples what the uninterrupted one would.
  - checkpoint.pt holds the tensors with requires_grad at the end (train.trainable_state); call
    ``OwLoreOptimizer.unfreeze_all()`` before saving to include layers trained earlier.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from adaptbench.protocol import OptimizerMethod
from adaptbench.registry import Paper, register
from methods.optimizers._lowrank_projection import (TRANSFORMER_LINEARS, check_lowrank_fields, check_target_modules,
                                                    lowrank_groups)
from methods.optimizers.galore import GaLoreOptimizer

LAYER_INDEX = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")  # encoder.layer.3. / model.layers.3.


@dataclass(frozen=True)
class OwLoreConfig:
    gamma: int = 5  # γ sampled layers; run_owlore_low_rank.sh lisa_activated_layers=5 (LISA ablation {2, 4, 8})
    period: int = 50  # K steps between resamplings; run_owlore_low_rank.sh lisa_interval_steps 50
    outlier_threshold: float = 13.0  # M; metric_cache/llama2_7b_ratio_13.txt (inferred, UNVERIFIED)
    rank: int = 256  # r; finetuner.py GaLore branch (fixed rank 256)
    update_proj_gap: int = 100  # T; finetuner.py GaLore branch
    scale: float = 1.0  # α; finetuner.py GaLore branch
    beta1: float = 0.9  # GaLoreAdamW default
    beta2: float = 0.999  # GaLoreAdamW default
    eps: float = 1e-6  # GaLoreAdamW default
    target_modules: tuple[str, ...] = TRANSFORMER_LINEARS  # reference: Linear modules named *attn* / *mlp*

    def __post_init__(self):
        check_lowrank_fields("owlore", rank=self.rank, update_proj_gap=self.update_proj_gap, scale=self.scale,
                             beta1=self.beta1, beta2=self.beta2, eps=self.eps)
        check_target_modules("owlore", self.target_modules)
        for field_name in ("gamma", "period"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"owlore: {field_name} must be a positive integer, got {value!r}")
        if not self.outlier_threshold > 0:
            raise ValueError(f"owlore: outlier_threshold must be > 0, got {self.outlier_threshold!r}")


def layer_index(name: str) -> int | None:
    """The block number in 'bert.encoder.layer.3.…' / 'model.layers.3.…' / 'transformer.h.3.…', else None."""
    found = LAYER_INDEX.search(name)
    return int(found.group(1)) if found else None


def outlier_ratio(weights: list[torch.Tensor], threshold: float) -> float:
    """D_ℓ = #{|w| > M·mean|w|} / #w over all the block's weight matrices taken together (OWL's per-layer rule)."""
    count = sum(w.numel() for w in weights)
    mean = sum(w.detach().abs().sum(dtype=torch.float64).item() for w in weights) / count  # no concatenated copy
    return sum(int((w.detach().abs() > threshold * mean).sum()) for w in weights) / count


def layer_outlier_ratios(named_params, threshold: float) -> dict[int, float]:
    """D_ℓ for every numbered block, from its 2-D tensors."""
    blocks: dict[int, list[torch.Tensor]] = {}
    for name, p in named_params:
        idx = layer_index(name)
        if idx is not None and p.ndim == 2:
            blocks.setdefault(idx, []).append(p)
    return {idx: outlier_ratio(ws, threshold) for idx, ws in sorted(blocks.items())}


def sampling_probabilities(ratios: list[float]) -> torch.Tensor:
    """p_ℓ = D_ℓ / Σ D (uniform when every D_ℓ is 0)."""
    d = torch.tensor(ratios, dtype=torch.float64)
    return d / d.sum() if d.sum() > 0 else torch.full_like(d, 1.0 / len(d))


def sample_layers(probabilities: torch.Tensor, gamma: int, generator: torch.Generator) -> list[int]:
    """γ distinct positions drawn with probabilities p, without replacement; γ capped by #{p > 0}."""
    k = min(gamma, int((probabilities > 0).sum()))
    return sorted(torch.multinomial(probabilities, k, replacement=False, generator=generator).tolist())


class OwLoreOptimizer(GaLoreOptimizer):
    """GaLore-AdamW over all trainable tensors; only the sampled layers (plus the unnumbered ones) have
    requires_grad, so only they get gradients, updates and optimizer state."""

    METHOD = "owlore"

    def __init__(self, params, lr: float, layers: dict[int, list[torch.nn.Parameter]], probabilities: torch.Tensor,
                 gamma: int, period: int, generator: torch.Generator, **galore_kw):
        super().__init__(params, lr, **galore_kw)
        self.layer_ids = sorted(layers)
        self.layers, self.probabilities = layers, probabilities
        self.gamma, self.period, self.generator = gamma, period, generator
        self.updates = 0
        self.resample()

    def resample(self) -> None:
        """Draw γ layers; unfreeze them, freeze and forget (grad, state) the others."""
        self.activate([self.layer_ids[i] for i in sample_layers(self.probabilities, self.gamma, self.generator)])

    def activate(self, layer_ids: list[int]) -> None:
        """Train the layers ``layer_ids``; freeze the others and forget their grad and state."""
        picked = set(layer_ids)
        self.active = sorted(picked)
        for idx, params in self.layers.items():
            for p in params:
                p.requires_grad_(idx in picked)
                if idx not in picked:
                    p.grad = None
                    self.state.pop(p, None)

    def unfreeze_all(self) -> None:
        for params in self.layers.values():
            for p in params:
                p.requires_grad_(True)

    def state_dict(self) -> dict:
        """GaLore's state plus the sampler's (updates taken, generator, active layers), so that a resumed run
        samples the same layers at the same steps as an uninterrupted one."""
        state = super().state_dict()
        state["sampler"] = {"updates": self.updates, "active": list(self.active),
                            "generator": self.generator.get_state()}
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        sampler = state_dict.pop("sampler", None)
        super().load_state_dict(state_dict)
        if sampler is not None:
            self.updates = sampler["updates"]
            self.generator.set_state(sampler["generator"])
            self.activate(sampler["active"])

    def step(self, closure=None):
        loss = super().step(closure)
        self.updates += 1
        if self.updates % self.period == 0:
            self.resample()
        return loss


@register(
    family="optimizer",
    paper=Paper(
        title="OwLore: Outlier-weighed Layerwise Sampled Low-Rank Projection for Memory-Efficient LLM Fine-tuning",
        arxiv="2405.18380",
        year=2024,
        venue="arXiv preprint",
        authors="Li, Yin, Gao, Liu",
        code="https://github.com/pixeli99/OwLore@c458d7ab5d6647447abe432f7f687dfac71b65c8",
    ),
    config=OwLoreConfig,
)
class OwLore(OptimizerMethod):
    # Contract test only (tests/methods/test_optimizer_contract.py): on its 2-layer model, one layer frozen and a
    # fresh draw every step, so that the frozen-layer and resume checks see the sampling at work.
    TEST_OVERRIDES = {"gamma": 1, "period": 1}

    outlier_ratios: dict[int, float] | None = None

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Record D_ℓ from every weight matrix of the model (trainable or not); the model is unchanged."""
        self.outlier_ratios = layer_outlier_ratios(model.named_parameters(), self.cfg.outlier_threshold)
        return model

    def build(self, named_params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        c = self.cfg
        named = list(named_params)
        layers: dict[int, list[torch.nn.Parameter]] = {}
        for name, p in named:
            if (idx := layer_index(name)) is not None:
                layers.setdefault(idx, []).append(p)
        if not layers:
            raise ValueError("owlore: no trainable parameter name has a layer index like 'encoder.layer.3.' or "
                             "'model.layers.3.'; use an optimizer without layer sampling (e.g. galore)")
        ratios = self.outlier_ratios or layer_outlier_ratios(named, c.outlier_threshold)
        probabilities = sampling_probabilities([ratios.get(idx, 0.0) for idx in sorted(layers)])
        generator = torch.Generator().manual_seed(torch.initial_seed())
        return OwLoreOptimizer(lowrank_groups(named, weight_decay, c.target_modules, c.rank), lr=lr, layers=layers,
                               probabilities=probabilities, gamma=c.gamma, period=c.period, generator=generator,
                               betas=(c.beta1, c.beta2), eps=c.eps, weight_decay=weight_decay, rank=c.rank,
                               update_proj_gap=c.update_proj_gap, scale=c.scale)
