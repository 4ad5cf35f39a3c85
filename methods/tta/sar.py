"""SAR: Towards Stable Test-Time Adaptation in Dynamic Wild World.

Niu, Wu, Zhang, Wen, Chen, Zhao, Tan. ICLR 2023. arXiv:2302.12400.
Reference implementation: https://github.com/mr-eggplant/SAR (sar.py, sam.py, main.py @ 492c1ad).

Implements
  Eq. (2) reliable entropy: keep H(x) < E0 (the EATA filter, no weight)                 -> eata.reliable
  Eq. (4) sharpness-aware step: ε̂ = ρ·g / ‖g‖ with g = ∇_θ of the filtered entropy and ‖·‖ the L2 norm over
          all adapted tensors; the update uses the gradient at θ + ε̂                    -> sam_perturbation
  The step (reference forward_and_adapt_sar): forward → filter → gradient g → θ + ε̂ → second forward →
          re-filter H < E0 among the first-kept samples → gradient g' at θ + ε̂ → restore θ → optimizer step
          with g' (SGD, SAM's base optimizer).
  §4 model recovery: ē ← λ·ē + (1 − λ)·L₂ over the second-step loss values; reset the model to the source
          state when ē < e_m                                                            -> update_loss_ema,
                                                                                           should_recover
  Predictions are those of the first forward pass, before the update.

Symbols: E0 → e_margin_frac·ln C, ρ → rho, ε̂ → perturbation, e_m → e_m_frac·ln C, ē → self.loss_ema,
λ → loss_ema_decay.

E0 and e_m for 2- and 10-class tasks (deliberate choices, tested in tests/methods/tta/test_sar.py)
  - E0 = 0.4·ln C as in EATA (C = 2: 0.277 nats, C = 10: 0.921 nats).
  - e_m = 0.2 is written for ImageNet (C = 1000). Kept constant, it would sit at 72% of E0 for C = 2 (the mean
    entropy of reliable binary samples is below 0.277 by construction), so recovery would fire on any easy binary
    stream, not on collapse. We keep e_m's ratio to the maximum entropy: e_m = (0.2/ln 1000)·ln C, i.e.
    0.2 at C = 1000, 0.0667 at C = 10 and 0.0201 at C = 2 (mean confidence ≈ 0.997 on two classes).

Deviations
  - e_m scales with ln C (above); mariodoebler/test-time-adaptation keeps 0.2 for every dataset.
  - The reference skips the top layers' norms (ResNet ``layer4``, ViT ``blocks.9-11`` and the final ``norm``);
    names differ per architecture, so ``exclude`` takes fnmatch patterns of module names and defaults to none
    (for a 12-layer HF encoder: ``("*encoder.layer.9.*", "*encoder.layer.10.*", "*encoder.layer.11.*")``).
  - A batch with no reliable sample, or none left after re-filtering, takes no step (the reference then steps
    with a zero gradient, which moves the parameters through SGD momentum alone).
  - The SAM step is written out with the protocol's optimizer instead of the davda54 SAM wrapper: same ε̂
    (including its 1e-12 guard), same restore-then-step order.
  - Equation numbers (2) and (4) are those the reference code cites; section numbers (§4 method, §5 setup) are
    from secondary sources, the paper text was not available here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from adaptbench.protocol import TTAMethod, TTAOptimConfig
from adaptbench.registry import Paper, register
from methods.tta.eata import e_margin, reliable
from methods.tta.tent import configure_norm_adaptation, norm_affine_params, softmax_entropy

GRAD_NORM_GUARD = 1e-12  # sam.py: scale = ρ / (‖g‖ + 1e-12)


@dataclass(frozen=True)
class SARConfig(TTAOptimConfig):
    optimizer: str = "sgd"  # TTAOptimConfig; main.py: SAM over SGD, momentum 0.9
    lr: float = 0.00025  # main.py ResNet-50 (BN/GN) at batch size >= 32; ViT-Base: 0.001·bs/64
    momentum: float = 0.9  # main.py
    weight_decay: float = 0.0  # main.py: SGD without weight decay
    beta: float = 0.9  # Adam β1 when optimizer == "adam" (not used by the paper)
    e_margin_frac: float = 0.4  # E0 = 0.4·ln C, Eq. (2) (main.py --sar_margin_e0 = ln(1000)·0.40)
    rho: float = 0.05  # ρ, Eq. (4): the SAM radius (sam.py default, used by main.py)
    e_m_frac: float = 0.2 / math.log(1000)  # e_m = 0.2 at C = 1000 (sar.py); scaled by ln C (docstring)
    loss_ema_decay: float = 0.9  # λ of the recovery moving average (sar.py update_ema)
    exclude: tuple[str, ...] = ()  # norm modules not adapted; reference skips layer4 / blocks.9-11 / norm

    def __post_init__(self):
        super().__post_init__()  # the optimizer fields
        if not 0 < self.e_margin_frac <= 1:
            raise ValueError(f"sar: e_margin_frac must be in (0, 1] (E0 = frac·ln C), got {self.e_margin_frac!r}")
        if not self.rho > 0:
            raise ValueError(f"sar: rho must be > 0, got {self.rho!r}")
        if not self.e_m_frac >= 0:
            raise ValueError(f"sar: e_m_frac must be >= 0 (0 disables recovery), got {self.e_m_frac!r}")
        if not 0 <= self.loss_ema_decay < 1:
            raise ValueError(f"sar: loss_ema_decay must be in [0, 1), got {self.loss_ema_decay!r}")
        if not all(isinstance(p, str) for p in self.exclude):
            raise ValueError(f"sar: exclude must be a tuple of fnmatch patterns, got {self.exclude!r}")


def reset_threshold(num_classes: int, frac: float = 0.2 / math.log(1000)) -> float:
    """§4: e_m = frac·ln C (0.2 at C = 1000, the paper's value)."""
    return frac * math.log(num_classes)


def sam_perturbation(grads: list[torch.Tensor], rho: float) -> list[torch.Tensor]:
    """Eq. (4): ε̂ = ρ·g / ‖g‖₂, the norm taken over all tensors together. shapes of the parameters."""
    norm = torch.norm(torch.stack([g.norm(p=2) for g in grads]), p=2)
    return [g * (rho / (norm + GRAD_NORM_GUARD)) for g in grads]


def update_loss_ema(ema: float | None, value: float, decay: float) -> float:
    """§4: ē ← λ·ē + (1 − λ)·L₂; the first value starts the average."""
    return value if ema is None else decay * ema + (1 - decay) * value


def should_recover(ema: float | None, e_m: float) -> bool:
    """§4: reset to the source model when the moving-average loss falls below e_m (strictly)."""
    return ema is not None and ema < e_m


@register(
    family="tta",
    paper=Paper(
        title="Towards Stable Test-Time Adaptation in Dynamic Wild World",
        arxiv="2302.12400",
        year=2023,
        venue="ICLR",
        authors="Niu, Wu, Zhang, Wen, Chen, Zhao, Tan",
        code="https://github.com/mr-eggplant/SAR@492c1ad",
    ),
    config=SARConfig,
)
class SAR(TTAMethod):
    """Sharpness-aware, reliable entropy minimisation with recovery to the source model on collapse."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.loss_ema: float | None = None

    def configure_model(self, model: nn.Module) -> nn.Module:
        return configure_norm_adaptation(model, "sar", self.cfg.exclude)

    def params_to_adapt(self, model: nn.Module) -> list[nn.Parameter]:
        return [p for _, p in norm_affine_params(model, self.cfg.exclude)]

    def reset_state(self) -> None:
        self.loss_ema = None

    @torch.enable_grad()
    def forward_and_adapt(self, inputs) -> torch.Tensor:
        logits = self.model(inputs)  # (B, C): the batch's predictions, made before the update
        e0 = e_margin(logits.shape[1], self.cfg.e_margin_frac)
        entropy = softmax_entropy(logits)
        keep = reliable(entropy.detach(), e0)
        stats = {"kept": float(keep.sum()), "kept_second": 0.0, "loss": float("nan"), "reset": 0.0}
        if keep.any():
            self.optimizer.zero_grad()
            entropy[keep].mean().backward()
            params = [p for p in self.params_to_adapt(self.model) if p.grad is not None]
            with torch.no_grad():
                originals = [p.detach().clone() for p in params]
                for p, e in zip(params, sam_perturbation([p.grad for p in params], self.cfg.rho)):
                    p.add_(e)  # θ + ε̂
            self.optimizer.zero_grad()
            entropy2 = softmax_entropy(self.model(inputs))
            keep2 = keep & reliable(entropy2.detach(), e0)  # re-filter at θ + ε̂ among the first-kept samples
            if keep2.any():
                loss2 = entropy2[keep2].mean()
                loss2.backward()  # g' at θ + ε̂
                self.loss_ema = update_loss_ema(self.loss_ema, loss2.item(), self.cfg.loss_ema_decay)
                stats.update(kept_second=float(keep2.sum()), loss=loss2.item())
            with torch.no_grad():
                for p, original in zip(params, originals):
                    p.copy_(original)  # back to θ, then step with g'
            if keep2.any():
                self.optimizer.step()
            self.optimizer.zero_grad()
        if should_recover(self.loss_ema, reset_threshold(logits.shape[1], self.cfg.e_m_frac)):
            self.reset()  # restores the source model and optimizer, clears the moving average
            stats["reset"] = 1.0
        stats["loss_ema"] = float("nan") if self.loss_ema is None else self.loss_ema
        self.last_stats = stats
        return logits.detach()
