"""SALT: Singular Value Adaptation with Low-Rank Transformation.

Elsayed, Hashmi, Elseiagy, Wang, Yaqub, Almakky. arXiv preprint, 2025 (v2 retitled "SALT: Parameter-Efficient
Fine-Tuning via Singular Value Adaptation with Low-Rank Transformation"). arXiv:2503.16055.
Reference implementation: https://github.com/BioMedIA-MBZUAI/SALT@dc1a600 (AllinonSAM/prompt_adapted_segment_anything/
modeling/image_encoder.py imports SALTLinear from SALT_layers_please_work.py; the stored index lacks that file in
the main repository, so it was read from the authors' working fork ahmedheakl/med-cvpr@346e1c2).

Implements (equation numbers are this module's own: only the abstract and the released code were reachable)
  Eq. (1)  W = U diag(σ) Vᵀ, the thin SVD of the frozen weight, k = min(d_out, d_in), σ descending;
  Eq. (2)  top-r block, "the most influential singular values": σ'_i = ReLU(α_i σ_i + β_i), i ≤ r, with
           trainable scale α (init 1) and shift β (init 0);
  Eq. (3)  residual block, "a low-rank update for the remaining subspace":
           Σ'_res = ReLU(diag(σ_{r+1..k}) + X Y), X ∈ R^{(k−r)×r_lora}, Y ∈ R^{r_lora×(k−r)}, i.e. a LoRA in the
           coordinates of the remaining singular vectors (the ReLU acts on every entry of the block, as in the code);
  Eq. (4)  W' = U blockdiag(Σ'_top, Σ'_res) Vᵀ, computed as W x + U ΔΣ Vᵀ x with ΔΣ = Σ' − diag(σ): the same
           matrix, and W stays bit-exact where ΔΣ = 0;
  Eq. (5)  R = ‖diag(α⊙σ_r + β) − diag(σ_r)‖_F + ‖X Y‖_F per layer, summed over layers, added as λ·R
           (train.py: ``loss += reg_loss * reg_multiplier``);
  merge:   W' folds into one plain nn.Linear.

Symbols: α → salt_scale (r,), β → salt_shift (r,), X → salt_X, Y → salt_Y, U → U_top | U_res,
Vᵀ → Vh_top | Vh_res, σ → sigma_top | sigma_res (buffers), r → r (code: rank / svd_rank_linear), r_lora → r_lora,
λ → reg_weight.

Defaults: r = 700 and r_lora = 256 on the attention projections (image_encoder.py: SALTLinear(qkv | proj,
rank=700, r_lora=256); fork config model_svdtuning.yml: svd_rank_linear 700, r_lora 256) of SAM ViT-B (width 768).
λ = 0: both stored model configs set ``reg_multiplier: 0`` (train_dl's signature default 0.01 is overridden by
main.py). Learning rate etc. are per task and live in the grid. The paper's 3.9% is for SAM on segmentation.

Deviations
  - r is clipped per layer to k − 1 so that the residual subspace (and its LoRA) is never empty; r = 700 on the
    32-wide test model trains the 31 largest values. r_lora is not clipped (the code uses 256 > k − r = 68).
  - The code also wraps the MLP with rank 200 (common.py MLPBlock) and the neck convolutions; a single r cannot
    express both, so the default targets are the attention projections. Add the MLP names to target_modules
    (with an r that suits them) to cover them.
  - The code takes the SVD at the first forward (after the checkpoint loads) and rebuilds U ReLU(Σ') Vᵀ in every
    forward; here the SVD runs in apply (float64, cast to the weight dtype) and only ΔΣ is applied on top of the
    untouched W: the same function without the reconstruction error.
  - The code seeds torch.manual_seed(42) in every layer; here the global seed (the trainer's) draws X and Y.
  - Not identity at init (IDENTITY_AT_INIT = False): X, Y ~ N(0, 0.01²) as in the code, so ReLU(XY) ≠ 0.
  - The SAM pipeline also trains LayerNorms and positional embeddings ("common parameters" in main.py); that is
    the segmentation recipe, not the adapter, and is not done here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from adaptbench.protocol import Adapter, fold_wrapped_layers, freeze_all, replace_module, target_linears
from adaptbench.registry import Paper, register
from methods.adapters._layers import AdaptedLinear


@dataclass(frozen=True)
class SALTConfig:
    r: int = 700  # image_encoder.py: rank=700 on qkv / proj (width 768); clipped to k − 1 per layer
    r_lora: int = 256  # image_encoder.py / model_svdtuning.yml: r_lora = 256
    reg_weight: float = 0.0  # λ; stored configs: reg_multiplier = 0 (train_dl default 0.01)
    init_std: float = 0.01  # SALT_layers_please_work.py: X, Y = randn · 0.01
    target_modules: tuple[str, ...] = (  # image_encoder.py: the attention projections qkv and proj
        "query", "key", "value", "attention.output.dense", "query_proj", "key_proj", "value_proj",
        "q_proj", "k_proj", "v_proj", "o_proj")

    def __post_init__(self):
        for field_name in ("r", "r_lora"):
            value = getattr(self, field_name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ValueError(f"salt: {field_name} must be a positive integer, got {value!r}")
        if not self.reg_weight >= 0:
            raise ValueError(f"salt: reg_weight must be >= 0, got {self.reg_weight!r}")
        if not self.init_std >= 0:
            raise ValueError(f"salt: init_std must be >= 0, got {self.init_std!r}")
        if not (isinstance(self.target_modules, tuple) and self.target_modules
                and all(isinstance(t, str) and t for t in self.target_modules)):
            raise ValueError(f"salt: target_modules must be a non-empty list of module-name suffixes, "
                             f"got {self.target_modules!r}")


def thin_svd(weight: torch.Tensor):
    """Eq. (1): W = U diag(σ) Vh in float64, σ descending. U (d_out, k), σ (k,), Vh (k, d_in)."""
    return torch.linalg.svd(weight.detach().double(), full_matrices=False)


def top_delta(sigma_top: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Eq. (2): ΔΣ_top = ReLU(α⊙σ_r + β) − σ_r, shape (r,)."""
    return torch.relu(scale * sigma_top + shift) - sigma_top


def residual_delta(sigma_res: torch.Tensor, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Eq. (3): ΔΣ_res = ReLU(diag(σ_res) + X Y) − diag(σ_res), shape (k − r, k − r)."""
    diag = torch.diag(sigma_res)
    return torch.relu(diag + X @ Y) - diag


def regularizer(sigma_top, scale, shift, X, Y) -> torch.Tensor:
    """Eq. (5): R = ‖diag(α⊙σ_r + β) − diag(σ_r)‖_F + ‖X Y‖_F (no ReLU inside, as in the code)."""
    return torch.linalg.vector_norm(scale * sigma_top + shift - sigma_top) + torch.linalg.matrix_norm(X @ Y)


class SALTLinear(AdaptedLinear):
    """y = W x + b + U_top ΔΣ_top Vh_top x + U_res ΔΣ_res Vh_res x   (Eq. 4)."""

    def __init__(self, base: nn.Linear, r: int, r_lora: int, init_std: float):
        k = min(base.out_features, base.in_features)
        if k < 2:
            raise ValueError(f"salt: a layer of shape {tuple(base.weight.shape)} has no residual subspace; "
                             f"drop it from target_modules")
        super().__init__(base)
        self.r = min(r, k - 1)
        dtype = base.weight.dtype
        U, S, Vh = (t.to(dtype) for t in thin_svd(base.weight))
        for name, t in (("U_top", U[:, : self.r]), ("U_res", U[:, self.r:]), ("sigma_top", S[: self.r]),
                        ("sigma_res", S[self.r:]), ("Vh_top", Vh[: self.r]), ("Vh_res", Vh[self.r:])):
            self.register_buffer(name, t.contiguous())
        like = dict(dtype=dtype, device=base.weight.device)
        self.salt_scale = nn.Parameter(torch.ones(self.r, **like))  # α = 1, β = 0: σ_r unchanged at init
        self.salt_shift = nn.Parameter(torch.zeros(self.r, **like))
        self.salt_X = nn.Parameter(torch.randn(k - self.r, r_lora, **like) * init_std)
        self.salt_Y = nn.Parameter(torch.randn(r_lora, k - self.r, **like) * init_std)

    def paths(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. (4)'s two update paths applied to x: (U_top ΔΣ_top Vh_top x, U_res ΔΣ_res Vh_res x)."""
        d_top = top_delta(self.sigma_top, self.salt_scale, self.salt_shift)
        d_res = residual_delta(self.sigma_res, self.salt_X, self.salt_Y)
        # (…, d_in) → (…, r) and (…, k−r) singular coordinates → (…, d_out); never forms a d_out×d_in matrix
        top = ((x @ self.Vh_top.T) * d_top) @ self.U_top.T
        res = (x @ self.Vh_res.T) @ d_res.T @ self.U_res.T
        return top, res

    def delta_forward(self, x: torch.Tensor) -> torch.Tensor:
        top, res = self.paths(x)
        return top + res

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base(x)
        top, res = self.paths(x)
        # base last and the paths added one by one: the rounding (and autograd's summation order) of Eq. (4) as first
        # written, so a fixed seed trains to the same weights
        return self.base(x) + top + res

    def delta_weight(self) -> torch.Tensor:
        """Eq. (4): W' − W = U_top diag(ΔΣ_top) Vh_top + U_res ΔΣ_res Vh_res, shape (d_out, d_in)."""
        d_top = top_delta(self.sigma_top, self.salt_scale, self.salt_shift)
        d_res = residual_delta(self.sigma_res, self.salt_X, self.salt_Y)
        return (self.U_top * d_top) @ self.Vh_top + self.U_res @ d_res @ self.Vh_res

    def regularizer(self) -> torch.Tensor:
        return regularizer(self.sigma_top, self.salt_scale, self.salt_shift, self.salt_X, self.salt_Y)


@register(
    family="adapter",
    paper=Paper(
        title="SALT: Singular Value Adaptation with Low-Rank Transformation",
        arxiv="2503.16055",
        year=2025,
        venue="arXiv preprint",
        authors="Elsayed, Hashmi, Elseiagy, Wang, Yaqub, Almakky",
        code="https://github.com/BioMedIA-MBZUAI/SALT@dc1a600",
    ),
    config=SALTConfig,
    mergeable=True,
)
class SALT(Adapter):
    TRAINABLE = ("*.salt_scale", "*.salt_shift", "*.salt_X", "*.salt_Y")
    IDENTITY_AT_INIT = False  # X, Y ~ N(0, init_std²) as in the code, so the residual block moves at init

    def apply(self, model: nn.Module) -> nn.Module:
        freeze_all(model)
        c = self.cfg
        for name, linear in target_linears(model, c.target_modules):
            replace_module(model, name, SALTLinear(linear, c.r, c.r_lora, c.init_std))
        return model

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        """λ · Σ_layers R (Eq. 5); nothing when λ = 0 (the released configs)."""
        if self.cfg.reg_weight == 0:
            return None
        layers = [m for m in model.modules() if isinstance(m, SALTLinear)]
        return self.cfg.reg_weight * torch.stack([m.regularizer() for m in layers]).sum() if layers else None

    def merge(self, model: nn.Module) -> nn.Module:
        """Fold U ΔΣ Vᵀ into W and put the plain nn.Linear back (Eq. 4)."""
        return fold_wrapped_layers(model, SALTLinear)
