"""EVA: Parameter Efficient Fine-tuning via Explained Variance Adaptation.

Paischer, Hauzenberger, Schmied, Alkin, Deisenroth, Hochreiter. NeurIPS 2025. arXiv:2410.07170 (v5).
Reference implementation: https://github.com/ml-jku/EVA@e047fe4 (src/svd.py, src/utils.py); the authors'
port in PEFT (``init_lora_weights="eva"``, peft/tuners/lora/eva.py), which test_eva.py compares against.

Implements (math in _eva_math.py)
  §3.2, App. F Alg. 2, Eq. (7–8)  incremental SVD of each layer's centred input activations, minibatch by minibatch;
  §3.2   convergence: cossim(v_j^{t−1}, v_j^t) ≥ τ for every component j a layer is allotted;
  Thm 3.1  A = V[:, :r_l]ᵀ, the top right-singular vectors (§3.2); §3.3 B = 0, so the model starts as the base;
  Eq. (6)  explained variance ratio ξ_j of every component;
  §3.5   rank allocation: the top l = N·r components over all N layers by ξ, at most ρ·r per layer;
  §4.1   α_new = α·r_l / r, i.e. every layer keeps LoRA's scaling α/r whatever its rank r_l;
  Alg. 1 the loop: minibatches (cycled) until all allotted components converge, ranks re-allocated each batch.

Symbols: r → r, ρ → rho, τ → tau, α → alpha, N → len(layers), l = N·r → budget, ξ → explained_variance_ratio,
M (samples seen) → IncrementalSVD.n, V_{:r,i} → lora_A (r_l × d_in), B → lora_B (d_out × r_l, zeros).

Defaults: r = 16, α = 1, τ = 0.99 (Table 4; §4.1 "α = 1 for all our experiments"), ρ = 2 (§5 recommends
redistribution by default; App. G searches ρ ∈ {1, 2}; PEFT's EvaConfig default), adapters on every weight
matrix but the embeddings (§4.1). GLUE searches r ∈ {2, 4, 6, 8} (App. C.3): set r in the grid.

Deviations
  - Exact thin SVD (float64) at every step; the paper and both codes use randomized truncated SVD
    (torch.svd_lowrank, q = 2ρr, 4 iterations). Deterministic, and cheap at encoder sizes.
  - Eq. (6) as printed divides σ_j² by (M − 1)‖σ‖₁; both codes use σ_j² / Σ‖x − μ‖² (incremental PCA's
    explained_variance_ratio_), which is what "explained variance ratio" means. We follow the codes.
  - Layers with identical inputs (q, k, v) share one incremental SVD as in both codes; we detect them by an
    exact fingerprint of the first batch (x·p for a fixed random p) instead of hashing the whole input.
  - Ties in the global sort keep module order; PEFT's argsort is unstable and then swaps ranks inside a
    group of shared-input layers so that the first has the most.
  - Padding is excluded with attention_mask (the authors' runs: use_label_mask False); labels here are
    sequence labels, so PEFT's token label mask does not apply. ρ·r is capped at d_in per layer.
  - The batches are re-iterated when one pass is not enough (the codes replay the first pass), and
    max_batches stops a run that never converges (the paper loops until it does).
  - A layer allotted rank 0 is left a plain nn.Linear (as PEFT).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from adaptbench.protocol import Adapter, fold_wrapped_layers, freeze_all, replace_module, target_linears
from adaptbench.registry import Paper, register
from methods.adapters._eva_math import allocate_ranks, converged, explained_variance_ratio, isvd_update
from methods.adapters._layer_inputs import LayerInputs
from methods.adapters._layers import LowRankLinear, wrapped_layers


@dataclass(frozen=True)
class EVAConfig:
    r: int = 16  # Table 4 "LoRA Dim 16"; GLUE searches r ∈ {2, 4, 6, 8} (App. C.3)
    alpha: float = 1.0  # §4.1 and Table 4: α = 1 in all experiments
    rho: float = 2.0  # §3.5 ρ ∈ [1, ∞), max rank ρr per layer; App. G searches {1, 2}; §5: redistribute by default
    tau: float = 0.99  # Table 4 and App. C.3: cosine threshold for convergence
    target_modules: tuple[str, ...] = (  # §4.1: every pre-trained weight matrix except the embeddings
        "query", "key", "value", "output.dense", "intermediate.dense",  # BERT / RoBERTa / DeBERTa FFN
        "query_proj", "key_proj", "value_proj",  # DeBERTa attention
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # Llama-style
    max_batches: int = 1000  # not in the paper (Alg. 1 loops until convergence): a stop for runs that never do

    def __post_init__(self):
        if not (isinstance(self.r, int) and self.r >= 1):
            raise ValueError(f"eva: r must be a positive integer, got {self.r!r}")
        if not self.alpha > 0:
            raise ValueError(f"eva: alpha must be > 0, got {self.alpha!r}")
        if not self.rho >= 1:
            raise ValueError(f"eva: rho must be >= 1, got {self.rho!r}")
        if not 0 < self.tau <= 1:
            raise ValueError(f"eva: tau must be in (0, 1], got {self.tau!r}")
        if not (isinstance(self.target_modules, tuple) and self.target_modules
                and all(isinstance(t, str) for t in self.target_modules)):
            raise ValueError(f"eva: target_modules must be a non-empty list of names, got {self.target_modules!r}")
        if not (isinstance(self.max_batches, int) and self.max_batches >= 1):
            raise ValueError(f"eva: max_batches must be a positive integer, got {self.max_batches!r}")


def cycled(batches):
    """The batches again and again (Alg. 1 line 2, next(D)); a one-shot iterable is an error once spent."""
    while True:
        count = 0
        for batch in batches:
            count += 1
            yield batch
        if count == 0:
            raise ValueError("eva: no batches to initialise from (pass a list or a DataLoader, not a spent iterator)")


def fingerprint(rows: torch.Tensor) -> torch.Tensor:
    """x·p for a fixed random p: equal for equal inputs, different otherwise (with probability 1)."""
    p = torch.randn(rows.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return rows.double() @ p.to(rows.device)


def fit_components(model: nn.Module, layers: dict[str, LowRankLinear], batches, c: EVAConfig):
    """Alg. 1: every layer's converged incremental SVD (shared by layers with identical inputs) and its
    allotted rank r_l; A_l = svd[name].Vh[:r_l]. Returns ({name: IncrementalSVD}, {name: r_l})."""
    k = {name: min(round(c.r * c.rho), m.base.in_features) for name, m in layers.items()}
    budget = min(c.r * len(layers), sum(k.values()))
    ranks, svd, ok, fps = dict(k), {}, {}, {}
    owner: dict[str, str] = {}  # layer → the layer whose SVD it shares (itself unless the inputs coincide)
    skip: set[str] = set()

    def consume(name: str, rows: torch.Tensor) -> None:
        if not owner:
            fps[name] = fingerprint(rows)
        elif owner[name] != name or name in skip:
            return
        if rows.shape[0] < k[name]:  # too few tokens for k components (as both codes): wait for more
            return
        previous = svd.get(name)
        svd[name] = isvd_update(previous, rows, k[name])
        if previous is not None:
            ok[name] = converged(previous.Vh, svd[name].Vh, c.tau).cpu()

    def done(o: str) -> bool:
        need = max(ranks[name] for name in layers if owner[name] == o)
        return need == 0 or (o in ok and bool(ok[o][:need].all()))

    with LayerInputs(model, layers, consume) as run:
        for step, batch in enumerate(cycled(batches)):
            owners = set(owner.values())
            if owner and all(done(o) for o in owners):
                break
            if step == c.max_batches:
                raise ValueError(f"eva: {sum(not done(o) for o in owners)} of {len(owners)} layer inputs did not "
                                 f"converge within max_batches={c.max_batches}; lower tau, raise max_batches "
                                 "or the batch size")
            skip = {o for o in owners if done(o)}
            run(batch)
            if not owner:  # after the first batch: layers with identical inputs share the first one's SVD
                for name in layers:
                    owner[name] = next(o for o in layers if fps[o].shape == fps[name].shape
                                       and torch.equal(fps[o], fps[name]))
            if all(owner[name] in svd for name in layers):
                ranks = allocate_ranks({n: explained_variance_ratio(svd[owner[n]]) for n in layers}, budget)
    return {name: svd[owner[name]] for name in layers}, ranks


@torch.no_grad()
def install_(model: nn.Module, name: str, layer: LowRankLinear, lora_A: torch.Tensor) -> None:
    """Thm 3.1: A = the allotted right-singular vectors (r_l, d_in), B = 0 (d_out, r_l); r_l = 0 → plain layer."""
    w = layer.base.weight
    if lora_A.ndim != 2 or lora_A.shape[1] != w.shape[1]:
        raise ValueError(f"eva: init state for '{name}' has shape {tuple(lora_A.shape)}, expected (r, {w.shape[1]})")
    if lora_A.shape[0] == 0:
        replace_module(model, name, layer.base)
        return
    layer.r = lora_A.shape[0]  # layer.scaling stays α/r (§4.1)
    layer.lora_A = nn.Parameter(lora_A.to(w.device, w.dtype).clone())
    layer.lora_B = nn.Parameter(torch.zeros(w.shape[0], layer.r, device=w.device, dtype=w.dtype))


@register(
    family="adapter",
    paper=Paper(
        title="Parameter Efficient Fine-tuning via Explained Variance Adaptation",
        arxiv="2410.07170",
        year=2025,
        venue="NeurIPS",
        authors="Paischer, Hauzenberger, Schmied, Alkin, Deisenroth, Hochreiter",
        code="https://github.com/ml-jku/EVA@e047fe4",
    ),
    config=EVAConfig,
    mergeable=True,
)
class EVA(Adapter):
    TRAINABLE = ("*.lora_A", "*.lora_B")
    DATA_DRIVEN = True

    def apply(self, model: nn.Module) -> nn.Module:
        """Wrap the targets at rank r with B = 0 (the base model); ``prepare`` sets ranks and A."""
        freeze_all(model)
        c = self.cfg
        for name, linear in target_linears(model, c.target_modules):
            replace_module(model, name, LowRankLinear(linear, c.r, c.alpha, dropout=0.0, init_a="kaiming_uniform"))
        return model

    def init_state(self, model: nn.Module, batches) -> dict[str, torch.Tensor]:
        svd, ranks = fit_components(model, dict(wrapped_layers(model, LowRankLinear)), batches, self.cfg)
        return {f"{name}.lora_A": svd[name].Vh[: ranks[name]].float().cpu() for name in svd}

    def load_init_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Rebuilds every wrapped layer at its allotted rank (shapes come from the state)."""
        for name, layer in wrapped_layers(model, LowRankLinear):
            if f"{name}.lora_A" not in state:
                raise ValueError(f"eva: init state has no '{name}.lora_A'; recompute it for this model and config")
            install_(model, name, layer, state[f"{name}.lora_A"])

    def merge(self, model: nn.Module) -> nn.Module:
        return fold_wrapped_layers(model, LowRankLinear)
