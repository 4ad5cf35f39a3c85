"""NLoRA (NyströmLoRA): SLoRA's three matrices initialised by the Nyström method, from
"NLoRA: Nyström-Initiated Low-Rank Adaptation for Large Language Models".

Guo, Chang, Wu. Findings of EMNLP 2025. arXiv:2502.14482.
Reference implementation: https://github.com/TracyGuo2001/NLoRA@b086286 (a PEFT fork; ``init_lora_weights="n_lora"``,
``LoraLayer.nlora_init`` in peft/src/peft/tuners/lora/layer.py; scripts/run_nlora.sh @0a1a022).

Implements
  §3 (SLoRA)  h = W x + s · B N A x, A, N, B all trained, W frozen (see slora.py);
  §3 (NLoRA)  Nyström: W ≈ C U⁺ R with C = W Ω, U = Ψᵀ W Ω, R = Ψᵀ W; init B = C, N = U⁺/s, A = R
              (_nlora_math.nystrom / init_nystrom_). Default sketch: the first r columns and rows, the indices
              the released code takes (C = W[:, :r], U = W[:r, :r], R = W[:r, :]); ``sketch="gaussian"``:
              Gaussian test matrices Ω, Ψ (randomized generalized Nyström);
  merge       W + s·B N A is a plain weight again.

Symbols (nn.Linear layout, weight = out × in; the paper writes Y = X W, so its A·N·B is our (B N A)ᵀ):
  C → lora_B (out × r), U⁺ → lora_N (r × r; "M" in the brief/catalog), R → lora_A (r × in),
  Ω → omega (in × r), Ψ → psi (out × r), r → r, α → alpha, s = α/r.

Residual. The released code neither subtracts the Nyström part from W nor otherwise compensates, so the adapted
model computes with W + C U⁺ R ≈ W + W_r at init, not with W: IDENTITY_AT_INIT = False. ``residual=True``
freezes W − C U⁺ R instead (PiSSA-style), which makes the model start equal to the base.

Defaults: r = α = 8 (authors' inttune.py defaults); NLG: r = α = 128 on q, k, v, o, gate, up, down of LLaMA-2-7B,
lr 2e-4, cosine, warmup 0.03, 1 epoch of MetaMathQA-100K (scripts/run_nlora.sh) -- grid settings.

Deviations
  - The paper's body (its §3 equations, its Nyström figure) was not available to us; this follows the released
    code, the README and the standard Nyström formula. Unverified against the paper: whether the core is U⁺
    (Nyström) or U itself, whether indices are the first r or sampled, and the residual treatment.
  - Core: N = U⁺, the Nyström formula. The released nlora_init copies U = W[:r, :r] itself (a pinv line is
    present but commented out); with U instead of U⁺, s·B N A is not an approximation of W.
  - N is divided by s = α/r so that s·B N A = C U⁺ R for every α (a no-op at the default α = r), as PEFT does
    for PiSSA's singular values.
  - U⁺ in float32 (torch.linalg.pinv, default rcond), factors cast back to the layer dtype.
  - No LoRA dropout (released scripts: 0).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from adaptbench.protocol import Adapter
from adaptbench.registry import register
from methods.adapters._nlora_math import ALL_BLOCK_LINEARS, PAPER, SKETCHES, apply_nystrom, check_common, merge_layers


@dataclass(frozen=True)
class NLoRAConfig:
    r: int = 8  # authors' inttune.py default (NLG scripts: 128)
    alpha: float = 8.0  # authors' inttune.py default; scripts keep α = r (s = 1)
    target_modules: tuple[str, ...] = ALL_BLOCK_LINEARS  # run_nlora.sh: q, k, v, o, gate, up, down
    sketch: str = "first_r"  # released nlora_init: first r columns/rows; "gaussian": random test matrices
    residual: bool = False  # released code: W kept as is; True: W − C U⁺ R frozen (model unchanged at init)

    def __post_init__(self):
        check_common("nlora", self.r, self.alpha, self.target_modules)
        if self.sketch not in SKETCHES:
            raise ValueError(f"nlora: sketch must be one of {SKETCHES}, got {self.sketch!r}")
        if not isinstance(self.residual, bool):
            raise ValueError(f"nlora: residual must be true or false, got {self.residual!r}")


@register(family="adapter", paper=PAPER, config=NLoRAConfig, mergeable=True)
class NLoRA(Adapter):
    TRAINABLE = ("*.lora_A", "*.lora_N", "*.lora_B")
    IDENTITY_AT_INIT = False  # default residual=False: W + C U⁺ R at init, as the released code

    def apply(self, model: nn.Module) -> nn.Module:
        return apply_nystrom("nlora", self.cfg, model)

    def merge(self, model: nn.Module) -> nn.Module:
        return merge_layers(model)
