"""LaMDA: Large Model Fine-Tuning via Spectrally Decomposed Low-Dimensional Adaptation.

Azizi, Kundu, Pedram. Findings of EMNLP 2024. arXiv:2406.12832.
Reference implementation: https://github.com/ArminAzizi98/LaMDA@78faf18 (lamda.py: the S path on PEFT's LoRA
layers; custom_trainer.py: ``gradual_freeze_B``; train_clm.py / train_wikitext.sh: the released Llama-2-7B run).

Implements (equation numbers are this module's own: the paper body was not reachable; what is marked
"abstract" or "Fig. 1" comes from the abstract and the Fig. 1 caption, the rest from the code)
  Eq. (1)  Y = X W + s · X A S B (paper, row-vector form): PMA A frozen from the start, the low-dimensional
           adapter S ∈ R^{r×r} trainable, PMB B trainable, then progressively frozen (abstract);
  Eq. (2)  spectral initialisation ("spectrally decomposed"; projections initialised from the singular vectors of W,
           UNVERIFIED detail): with the stored weight (d_out × d_in) = U Σ Vᵀ, A ← V_r, S ← Σ_r / s, B ← U_rᵀ, and
           the frozen weight becomes the residual minus s·A S B, so the model starts equal to the base (PiSSA-style);
  Eq. (3)  gradual freezing of PMB "based on the singular values" (Fig. 1): after t optimizer steps the n(t) =
           min(r, ⌊r·t / t_i⌋) components with the largest singular values are frozen, t_i = ⌈η·T⌉; at t_i PMB is
           completely frozen (no gradient at all) and only S trains (Fig. 1: "After t_i iterations, PMB is
           completely frozen, and only the LDA is fine-tuned");
  merge:   W_res + s·B S A is a plain weight again.
The layer (Eq. 1–2) and the schedule (Eq. 3) live in _lamda_math.py, shared with LaMDA++ (lamda_pp.py).

Symbols (nn.Linear stores Wᵀ, so the paper's row-vector A, B appear transposed): A → lamda_A (r × d_in, buffer),
S → lamda_S (r × r), B → lamda_B (d_out × r), s → scaling = α/r (PEFT's scaling, which lamda.py multiplies in),
η → eta, t_i → ⌈η·T⌉, T → total_steps, W_res → base.weight.

Defaults: the only released run (train_wikitext.sh, train_clm.py) uses rank 64, lora_alpha 16 on q, k, v, o, up,
down and gate projections of Llama-2-7B, and custom_trainer.py calls gradual_freeze_B with eta = 0.3. GLUE
settings are not released (CLAIMS.md "LaMDA": UNVERIFIED); set them in the grid.

Deviations
  - Schedule: custom_trainer.py freezes ⌊iter / (η·T)⌋ leading columns of B, which reaches at most ⌊1/η⌋ = 3
    columns of 64, so B is never fully frozen, contradicting Fig. 1. We read η·T as t_i, the step at which PMB is
    completely frozen, and freeze components at an even pace up to it. The order (largest singular value first)
    is the code's: it freezes the leading columns B[:, :t].
  - Frozen components stop exactly: their gradients are masked in the forward pass and on_step restores their
    values, so AdamW's momentum and weight decay cannot move them (the code zeroes the gradient only). The trainer
    calls on_step after the optimizer step, so freezing takes effect from the next step. before_step re-applies
    the schedule for the steps already done, which restores it when training resumes from a checkpoint.
  - A completely frozen PMB is detached from the graph (its grad stays None, so the optimizer skips it, as after
    the code's requires_grad = False) but keeps requires_grad: the trainer checkpoints only requires_grad tensors,
    and a flipped flag would drop the trained B from checkpoint.pt.
  - Released code initialises with PEFT's LoRA default (A Kaiming, B = 0, S = nn.Linear default); the SVD
    initialisation of Eq. (2) follows the paper's description and is UNVERIFIED in its exact form.
  - dropout 0 (train_clm.py: 0.1): with the SVD init the adapter path carries W's principal part, and dropout on it
    would drop principal signal (PiSSA uses 0 for the same reason).
  - r is clipped per layer to min(d_out, d_in) (r = 64 on the 32-wide test model trains the full spectrum).
  - target_modules: the Llama names of the released run plus their BERT / RoBERTa / DeBERTa analogues.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from adaptbench.protocol import Adapter, fold_wrapped_layers, freeze_all, replace_module, target_linears
from adaptbench.registry import Paper, register
from methods.adapters._lamda_math import ALL_LINEAR, LaMDALinear, check_common, freeze_after, updated_parameters


@dataclass(frozen=True)
class LaMDAConfig:
    r: int = 64  # train_clm.py --rank default 64 (train_wikitext.sh, Llama-2-7B)
    alpha: float = 16.0  # train_clm.py --lora_alpha default 16; scaling s = α/r
    eta: float = 0.3  # custom_trainer.py: gradual_freeze_B(..., eta=0.3); PMB fully frozen after η·T steps
    target_modules: tuple[str, ...] = ALL_LINEAR  # train_clm.py: q, k, v, o, up, down, gate

    def __post_init__(self):
        check_common("lamda", self)


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
    config=LaMDAConfig,
    mergeable=True,
)
class LaMDA(Adapter):
    TRAINABLE = ("*.lamda_S", "*.lamda_B")

    def apply(self, model: nn.Module) -> nn.Module:
        freeze_all(model)
        for name, linear in target_linears(model, self.cfg.target_modules):
            replace_module(model, name, LaMDALinear(linear, self.cfg.r, self.cfg.alpha))
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
        """Fold s·B S A into W_res and put the plain nn.Linear back."""
        return fold_wrapped_layers(model, LaMDALinear)
