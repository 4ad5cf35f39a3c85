"""CorDA: Context-Oriented Decomposition Adaptation of Large Language Models for Task-Aware
Parameter-Efficient Fine-tuning.

Yang, Li, Zhou, Song, Wu, Nie, Ghanem. NeurIPS 2024. arXiv:2406.05223.
Reference implementation: https://github.com/iboing/CorDA@7c65b78 (cordalib/act_aware_utils.py,
cordalib/decomposition.py); the authors point to PEFT's port (``init_lora_weights="corda"``,
peft/tuners/lora/corda.py, ``preprocess_corda``), which tests/methods/adapters/test_corda.py compares against.

Implements
  §3.2      C = XᵀX / N, the second moment of each target layer's inputs over the N tokens of a few samples;
  §3.2      damping: C ← C + λ·mean(diag C)·I, λ = 0.01 doubled until ‖C C⁻¹ − I‖_F < 0.05;
  Eq. (2)   SVD(W C) = U Σ Vᵀ;
  Eq. (3)   W = U Σ (Vᵀ C⁻¹): the context-oriented components σ_i u_i v̂_iᵀ reconstruct W;
  Eq. (4)   KPM (knowledge-preserved): B = U[:, −r:] √Σ[−r:], A = √Σ[−r:] (VᵀC⁻¹)[−r:]  (r smallest train);
  Eq. (5)   IPM (instruction-previewed): B = U[:, :r] √Σ[:r], A = √Σ[:r] (VᵀC⁻¹)[:r]  (r largest train);
  Eq. (4–5) W' = W − B A is frozen, so the adapted model equals the base at init; merge: W' + B A.

Symbols. The paper's W ∈ R^{d_out×d_in} is nn.Linear's weight; its X ∈ R^{d_in×BL} holds tokens as columns,
ours as rows (N × d_in), hence C = XᵀX here. B → lora_B (d_out×r), A → lora_A (r×d_in), W' → base.weight,
U, Σ, Vᵀ C⁻¹ → context_svd(); λ → damping, the threshold → inverse_tol, mode "kpm" | "ipm" → §3.3 | §3.4.

Scaling. The paper trains B A unscaled. As PEFT (and PiSSA here), we keep LoRA's s = α/r and divide Σ by s
before the square roots, so s·B A is the same for every α; α = r (the default, alpha=None) is the paper.

Defaults: r = 128 on all linear layers but the classification head, IPM, 256 samples (App. A.2, GLUE on
RoBERTa-base, Table 3; Tables 1–2 also use r = 128). Learning rate and epochs live in the grid.

Deviations
  - C is divided by the token count N. The paper writes the sum XXᵀ; the authors' code and PEFT divide each
    sample by its largest entry and average over samples. W' and B A do not depend on the scale c of C
    (damping is relative to mean diag C), but the split of √Σ does: ‖B‖ ∝ √c, ‖A‖ ∝ 1/√c. A raw sum over
    ~10⁵ tokens would make B ~300× larger and A ~300× smaller than a per-token scale; the mean keeps C at
    the activations' second moment whatever the number of tokens sampled. The PEFT test shows the factor.
  - The samples are the first num_samples training sequences as the loader yields them, padding excluded
    via attention_mask (App. A.2: 256 random 256-token segments of one text field, concatenated).
  - r is clamped to min(d_out, d_in) per layer (as sorsa), so r = 128 also runs on tiny test models.
  - The pooler is not a target (RoBERTa's classification model, the paper's, has none).
  - Inverse and SVD run in float32 with the references' operations, bit-identical to PEFT given the same C.
    Note: C of LayerNorm outputs is singular (their features sum to zero), so damping always acts and
    float32 rounding in C moves B A by up to ~1e-3 (relative) on the random test model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from adaptbench.protocol import Adapter, fold_wrapped_layers, freeze_all, replace_module, target_linears
from adaptbench.registry import Paper, register
from methods.adapters._layer_inputs import LayerInputs, batch_size, first_rows
from methods.adapters._layers import LowRankLinear, wrapped_layers
from methods.adapters._svd_math import factors

MODES = ("kpm", "ipm")


@dataclass(frozen=True)
class CorDAConfig:
    r: int = 128  # App. A.2 (GLUE, RoBERTa-base) and Tables 1–3: rank 128
    mode: str = "ipm"  # §3.3 "kpm" (r smallest train) | §3.4 "ipm" (r largest train); Table 3 (GLUE) is IPM
    alpha: float | None = None  # None: α = r, i.e. B A unscaled as Eq. (4)–(5); other values as PEFT's α
    target_modules: tuple[str, ...] = (  # App. A.2: all linear layers except the classification head
        "query", "key", "value", "output.dense", "intermediate.dense",  # BERT / RoBERTa / DeBERTa FFN
        "query_proj", "key_proj", "value_proj",  # DeBERTa attention
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # Llama-style
    num_samples: int = 256  # App. A.2 "256 text segments"; README --calib_loader_size 256
    damping: float = 0.01  # §3.2 "a positive coefficient"; 0.01 in cordalib/decomposition.py and PEFT
    inverse_tol: float = 0.05  # §3.2 threshold on ‖C C⁻¹ − I‖; 0.05 in cordalib/decomposition.py and PEFT

    def __post_init__(self):
        if not (isinstance(self.r, int) and self.r >= 1):
            raise ValueError(f"corda: r must be a positive integer, got {self.r!r}")
        if self.mode not in MODES:
            raise ValueError(f"corda: mode must be 'kpm' or 'ipm', got {self.mode!r}")
        if self.alpha is not None and not self.alpha > 0:
            raise ValueError(f"corda: alpha must be null (α = r) or > 0, got {self.alpha!r}")
        if not (isinstance(self.target_modules, tuple) and self.target_modules
                and all(isinstance(t, str) for t in self.target_modules)):
            raise ValueError(f"corda: target_modules must be a non-empty list of names, got {self.target_modules!r}")
        if not (isinstance(self.num_samples, int) and self.num_samples >= 1):
            raise ValueError(f"corda: num_samples must be a positive integer, got {self.num_samples!r}")
        if not self.damping > 0:
            raise ValueError(f"corda: damping must be > 0, got {self.damping!r}")
        if not self.inverse_tol > 0:
            raise ValueError(f"corda: inverse_tol must be > 0, got {self.inverse_tol!r}")


def covariances(model: nn.Module, layers: dict[str, nn.Module], batches, num_samples: int) -> dict[str, torch.Tensor]:
    """§3.2: C = XᵀX / N per layer, X (N, d_in) the real tokens of the first num_samples sequences."""
    sums: dict[str, torch.Tensor] = {}
    counts = dict.fromkeys(layers, 0)

    def consume(name: str, rows: torch.Tensor) -> None:
        x = rows.float()
        sums[name] = sums[name] + x.T @ x if name in sums else x.T @ x
        counts[name] += x.shape[0]

    seen = 0
    with LayerInputs(model, layers, consume) as run:
        for batch in batches:
            take = min(batch_size(batch), num_samples - seen)
            run(first_rows(batch, take))
            seen += take
            if seen >= num_samples:
                break
    empty = [name for name, n in counts.items() if n == 0]
    if empty:
        raise ValueError(f"corda: no tokens reached {empty[:3]}; pass batches with at least one non-padding token")
    return {name: sums[name] / counts[name] for name in layers}


def damped_inverse(C: torch.Tensor, damping: float, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """§3.2: C + λ·mean(diag C)·I with λ = damping, doubled until ‖(C + …)(C + …)⁻¹ − I‖_F < tol.
    Returns the damped C (d_in, d_in) and its inverse."""
    if not torch.isfinite(C).all() or not torch.diagonal(C).mean() > 0:
        raise ValueError("corda: covariance is zero or not finite; check the batches reach the layer")
    eye = torch.eye(C.shape[0], dtype=C.dtype, device=C.device)
    lam = damping
    while True:  # the references' order of operations, so that C_fix matches theirs bit for bit
        C_fix = C + torch.diag(torch.ones_like(C.diagonal()) * torch.mean(torch.diag(C)) * lam)
        C_inv = torch.linalg.inv(C_fix)
        if torch.dist(C_fix @ C_inv, eye) < tol:
            return C_fix, C_inv
        lam *= 2


def context_svd(W: torch.Tensor, C: torch.Tensor, C_inv: torch.Tensor):
    """Eq. (2)–(3): SVD(W C) = U diag(Σ) Vᵀ, returned with the rows of Vᵀ C⁻¹ so that W = U diag(Σ) (Vᵀ C⁻¹).
    W (d_out, d_in) → U (d_out, k), Σ (k,) descending, Vᵀ C⁻¹ (k, d_in), k = min(d_out, d_in)."""
    U, S, Vh = torch.linalg.svd(W.float() @ C, full_matrices=False)
    return U, S, Vh @ C_inv


def components(U: torch.Tensor, S: torch.Tensor, Vh_hat: torch.Tensor, r: int, mode: str):
    """Eq. (4) KPM: the r components with the smallest σ_i; Eq. (5) IPM: the r with the largest."""
    keep = slice(-r, None) if mode == "kpm" else slice(0, r)
    return U[:, keep], S[keep], Vh_hat[keep]


def effective_weight(layer: LowRankLinear) -> torch.Tensor:
    """W' + s·B A in float32 (= W on a freshly wrapped layer, where B = 0)."""
    return layer.base.weight.float() + layer.scaling * (layer.lora_B.float() @ layer.lora_A.float())


@torch.no_grad()
def install_(layer: LowRankLinear, lora_A: torch.Tensor, lora_B: torch.Tensor) -> None:
    """Eq. (4)–(5): (A, B) into the adapter and W' = W − s·B A into the frozen weight."""
    w = layer.base.weight
    if lora_A.shape != layer.lora_A.shape or lora_B.shape != layer.lora_B.shape:
        raise ValueError(f"corda: init state has A {tuple(lora_A.shape)}, B {tuple(lora_B.shape)} but the layer needs "
                         f"{tuple(layer.lora_A.shape)}, {tuple(layer.lora_B.shape)}; recompute it for this config")
    W = effective_weight(layer)
    lora_A, lora_B = lora_A.to(w.device, torch.float32), lora_B.to(w.device, torch.float32)
    layer.lora_A.copy_(lora_A.to(w.dtype))
    layer.lora_B.copy_(lora_B.to(w.dtype))
    w.copy_((W - layer.scaling * lora_B @ lora_A).to(w.dtype))


@register(
    family="adapter",
    paper=Paper(
        title="CorDA: Context-Oriented Decomposition Adaptation of Large Language Models for Task-Aware "
              "Parameter-Efficient Fine-tuning",
        arxiv="2406.05223",
        year=2024,
        venue="NeurIPS",
        authors="Yang, Li, Zhou, Song, Wu, Nie, Ghanem",
        code="https://github.com/iboing/CorDA@7c65b78",
    ),
    config=CorDAConfig,
    mergeable=True,
)
class CorDA(Adapter):
    TRAINABLE = ("*.lora_A", "*.lora_B")
    DATA_DRIVEN = True

    def apply(self, model: nn.Module) -> nn.Module:
        """Wrap the targets with B = 0, so the model is the base model until ``prepare``."""
        freeze_all(model)
        c = self.cfg
        for name, linear in target_linears(model, c.target_modules):
            r = min(c.r, linear.in_features, linear.out_features)
            alpha = float(r) if c.alpha is None else c.alpha
            replace_module(model, name, LowRankLinear(linear, r, alpha, dropout=0.0, init_a="kaiming_uniform"))
        return model

    def init_state(self, model: nn.Module, batches) -> dict[str, torch.Tensor]:
        """Covariances → damped inverse → context-oriented SVD → the chosen components as (A, B) per layer."""
        c = self.cfg
        layers = dict(wrapped_layers(model, LowRankLinear))
        C = covariances(model, layers, batches, c.num_samples)
        state = {}
        with torch.no_grad():
            for name, layer in layers.items():
                C_fix, C_inv = damped_inverse(C[name], c.damping, c.inverse_tol)
                U, S, Vh_hat = context_svd(effective_weight(layer), C_fix, C_inv)
                lora_A, lora_B = factors(*components(U, S, Vh_hat, layer.r, c.mode), layer.scaling)
                state[f"{name}.lora_A"], state[f"{name}.lora_B"] = lora_A.cpu(), lora_B.cpu()
        return state

    def load_init_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        for name, layer in wrapped_layers(model, LowRankLinear):
            keys = (f"{name}.lora_A", f"{name}.lora_B")
            if not all(k in state for k in keys):
                raise ValueError(f"corda: init state has no tensors for '{name}'; recompute it for this model")
            install_(layer, state[keys[0]], state[keys[1]])

    def merge(self, model: nn.Module) -> nn.Module:
        """W' + s·B A folded into one plain nn.Linear per adapted layer."""
        return fold_wrapped_layers(model, LowRankLinear)
