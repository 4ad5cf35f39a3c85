"""CoTTA: Continual Test-Time Domain Adaptation.

Wang, Fink, Van Gool, Dai. CVPR 2022. arXiv:2203.13591.
Reference implementation: https://github.com/qinenergy/cotta@c212a20 (cifar/cotta.py, cfgs/cifar10/cotta.yaml);
also mariodoebler/test-time-adaptation@8b2ed63 (classification/methods/cotta.py).

Implements (§3; equation numbers as we read them, not re-checked against the PDF)
  Eq. (1)  teacher prediction          ŷ' = f_θ'(x)
  Eq. (2)  student loss                L = −Σ_c y'_c · log softmax(f_θ(x))_c     (soft cross-entropy)
  Eq. (3)  teacher EMA                 θ' ← α·θ' + (1 − α)·θ                      (after the student step)
  Eq. (4)  augmentation average        ỹ' = (1/N)·Σ_i f_θ'(aug_i(x))
  Eq. (5)  pseudo-label choice         y' = ŷ' if conf(f_θ0(x)) ≥ p_th, else ỹ'
  Eq. (6)–(7) stochastic restore       M ~ Bernoulli(p) per element;  W ← M ⊙ W_0 + (1 − M) ⊙ W
  Every parameter of the network trains (§3.3); the prediction returned is the teacher's y'.

Symbols: θ → student (the attached model), θ' → teacher, θ0 → anchor (a frozen copy of the source),
α → alpha_teacher, p → restore_prob, p_th → conf_threshold, N → n_augmentations.

Deviations
  - Eq. (5) is written per sample; the reference code (both repositories above) compares the batch mean of the
    source confidence with p_th and averages the whole batch. We follow the code that produced the paper's numbers.
  - Augmentations are computed only when Eq. (5) selects them (the reference computes them always and discards).
  - The paper's image augmentations (ColorJitterPro incl. saturation, hue, gamma; edge pad + RandomAffine + blur +
    centre crop; horizontal flip; noise; clip to [0, 1]) need torchvision and a known pixel range. Ours, in torch,
    for (N, C, H, W) inputs: contrast and brightness jitter, a rotation/scale/translation jitter sampled with
    border padding (≈ edge pad + crop), Gaussian noise; no flip (digits and text-like images are not mirror
    symmetric), no blur/saturation/hue/gamma, no clipping (inputs may be normalised). Ranges are the reference's;
    the translation is RandomAffine's translate = 1/16 of the image after its edge padding by half the side,
    i.e. up to ±1/8 of the input's side (±4 px at 32 px, ±28 px at 224 px; max_translation), drawn continuously
    (torchvision rounds it to whole pixels) and applied after rotation and scale, as RandomAffine does.
    Other tensors (e.g. feature vectors) get the jitter and the noise only.
  - Text (dict inputs): each non-special, attended token is dropped with probability token_drop_prob, by zeroing
    its attention mask (default) or replacing it by mask_token_id. The paper has no text augmentation; this is ours.
  - The model runs in eval mode (dropout off) with BatchNorm forced to batch statistics; the reference runs in
    train mode for the same BatchNorm behaviour, on CNNs without dropout.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from adaptbench.protocol import TTAMethod, TTAOptimConfig
from adaptbench.registry import Paper, register


# get_tta_transforms edge-pads the image by half its side on each side (Pad(n_pixels / 2)) before RandomAffine and
# centre-crops after it, so RandomAffine's translate fraction is of a side PAD_FACTOR times the input's.
PAD_FACTOR = 2


@dataclass(frozen=True)
class CoTTAConfig(TTAOptimConfig):
    optimizer: str = "adam"  # TTAOptimConfig; CIFAR cfgs: Adam (ImageNet-C: SGD lr 0.01)
    lr: float = 1e-3  # CIFAR cfgs OPTIM.LR
    momentum: float = 0.9  # SGD momentum (ImageNet cfg)
    weight_decay: float = 0.0  # cfgs OPTIM.WD
    beta: float = 0.9  # Adam β1, CIFAR cfgs OPTIM.BETA
    alpha_teacher: float = 0.999  # α, cfgs/cifar10/cotta.yaml MODEL_MT (all datasets)
    restore_prob: float = 0.01  # p, CIFAR10/100-C cfg RST (ImageNet-C: 0.001)
    conf_threshold: float = 0.92  # p_th, CIFAR10-C cfg AP (CIFAR100-C 0.72, ImageNet-C 0.1)
    n_augmentations: int = 32  # N, cifar/cotta.py
    brightness: tuple[float, float] = (0.6, 1.4)  # get_tta_transforms ColorJitterPro (non-soft)
    contrast: tuple[float, float] = (0.7, 1.3)  # idem
    rotation_deg: float = 15.0  # RandomAffine degrees
    translate_frac: float = 1 / 16  # RandomAffine translate, a fraction of the padded side: ±side/8 (4 px at 32)
    scale: tuple[float, float] = (0.9, 1.1)  # RandomAffine scale
    noise_std: float = 0.005  # GaussianNoise(0, 0.005)
    token_drop_prob: float = 0.1  # ours (text has no paper augmentation)
    mask_token_id: int | None = None  # None: drop attention; else replace input_ids (BERT [MASK] = 103)
    special_token_ids: tuple[int, ...] = (0, 101, 102, 103)  # never dropped: BERT WordPiece [PAD] [CLS] [SEP] [MASK]

    def __post_init__(self):
        super().__post_init__()  # the optimizer fields
        for name in ("alpha_teacher", "restore_prob", "conf_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"cotta: {name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.n_augmentations < 1:
            raise ValueError(f"cotta: n_augmentations must be >= 1, got {self.n_augmentations!r}")
        for name in ("brightness", "contrast", "scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"cotta: {name} must be a range (lo, hi) with 0 < lo <= hi, got {(lo, hi)!r}")
        for name in ("rotation_deg", "translate_frac", "noise_std"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"cotta: {name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.token_drop_prob < 1.0:
            raise ValueError(f"cotta: token_drop_prob must be in [0, 1), got {self.token_drop_prob!r}")


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Eq. (2): −Σ_c softmax(y')_c · log softmax(ŷ)_c; (B, C), (B, C) -> (B,)."""
    return -(teacher_logits.softmax(1) * student_logits.log_softmax(1)).sum(1)


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, alpha: float) -> None:
    """Eq. (3): θ' ← α·θ' + (1 − α)·θ, in place, over parameters (buffers are not averaged)."""
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(alpha).add_(s.detach(), alpha=1.0 - alpha)


@torch.no_grad()
def stochastic_restore_(pairs: list[tuple[torch.Tensor, torch.Tensor]], p: float) -> int:
    """Eq. (6)–(7): each element of W is reset to W_0 with probability p; returns how many were reset."""
    restored = 0
    for weight, source in pairs:
        mask = torch.rand(weight.shape, device=weight.device) < p  # M ~ Bernoulli(p)
        weight.copy_(torch.where(mask, source, weight))
        restored += int(mask.sum())
    return restored


def _uniform(n: int, lo: float, hi: float, like: torch.Tensor) -> torch.Tensor:
    return torch.rand(n, device=like.device, dtype=like.dtype) * (hi - lo) + lo


def max_translation(translate_frac: float) -> float:
    """RandomAffine's largest shift as a fraction of the input's side: the reference pads each side by half the
    side, so translate_frac of the padded side is PAD_FACTOR·translate_frac of the input's (1/16 -> 1/8: ±4 px
    for 32-px CIFAR images, ±28 px for 224-px ImageNet images; per axis, of that axis's side)."""
    return PAD_FACTOR * translate_frac


def augment_tensor(x: torch.Tensor, cfg: CoTTAConfig) -> torch.Tensor:
    """One random view aug_i(x) of a float batch (B, ...): contrast, brightness, affine (4-D only), noise."""
    b = x.shape[0]
    view = (b,) + (1,) * (x.ndim - 1)
    mean = x.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
    x = (x - mean) * _uniform(b, *cfg.contrast, x).view(view) + mean  # contrast: blend with the mean
    x = x * _uniform(b, *cfg.brightness, x).view(view)  # brightness: scale
    if x.ndim == 4:  # (B, C, H, W): rotation, scale, translation; sampling grid spans [-1, 1]
        angle = _uniform(b, -cfg.rotation_deg, cfg.rotation_deg, x) * math.pi / 180
        inv_scale = 1.0 / _uniform(b, *cfg.scale, x)
        cos, sin = torch.cos(angle) * inv_scale, torch.sin(angle) * inv_scale
        a = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # (B, 2, 2) output -> input
        limit = max_translation(cfg.translate_frac) * 2  # grid units: the side spans 2
        shift = (torch.rand(b, 2, 1, device=x.device, dtype=x.dtype) * 2 - 1) * limit  # (B, 2, 1), (x, y)
        theta = torch.cat([a, -(a @ shift)], 2)  # x_in = A·(x_out − t): the content moves by t, as RandomAffine's
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return x + cfg.noise_std * torch.randn_like(x)


def drop_tokens(batch: dict, cfg: CoTTAConfig) -> dict:
    """One random view of a text batch: drop attended, non-special tokens with probability token_drop_prob."""
    ids = batch["input_ids"]
    attention = batch.get("attention_mask", torch.ones_like(ids))
    special = torch.tensor(cfg.special_token_ids, device=ids.device, dtype=ids.dtype)
    candidates = attention.bool() & ~torch.isin(ids, special)
    drop = candidates & (torch.rand(ids.shape, device=ids.device) < cfg.token_drop_prob)
    view = dict(batch)
    if cfg.mask_token_id is None:
        view["attention_mask"] = attention.masked_fill(drop, 0)
    else:
        view["input_ids"] = ids.masked_fill(drop, cfg.mask_token_id)
    return view


def augment(inputs, cfg: CoTTAConfig):
    return drop_tokens(inputs, cfg) if isinstance(inputs, dict) else augment_tensor(inputs, cfg)


@torch.no_grad()
def augmentation_average(teacher: nn.Module, inputs, cfg: CoTTAConfig) -> torch.Tensor:
    """Eq. (4): ỹ' = (1/N)·Σ_i f_θ'(aug_i(x)), averaged as logits like the reference; -> (B, C)."""
    return torch.stack([teacher(augment(inputs, cfg)) for _ in range(cfg.n_augmentations)]).mean(0)


def use_augmentation(source_confidence: torch.Tensor, conf_threshold: float) -> bool:
    """Eq. (5), batch-level as in the reference code: augment iff mean_i max_c f_θ0(x_i)_c < p_th."""
    return bool(source_confidence.mean() < conf_threshold)


def use_batch_statistics(model: nn.Module) -> None:
    """BatchNorm normalises with the test batch's statistics in any mode (running estimates dropped)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.track_running_stats = False
            m.running_mean, m.running_var = None, None


def frozen_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).requires_grad_(False)


@register(
    family="tta",
    paper=Paper(
        title="Continual Test-Time Domain Adaptation",
        arxiv="2203.13591",
        year=2022,
        venue="CVPR",
        authors="Wang, Fink, Van Gool, Dai",
        code="https://github.com/qinenergy/cotta@c212a20",
    ),
    config=CoTTAConfig,
)
class CoTTA(TTAMethod):
    """Mean-teacher self-training of all weights with augmentation-averaged pseudo-labels and stochastic restore."""

    TEST_OVERRIDES = {"n_augmentations": 4}  # contract test only: N + 3 forward passes per batch

    def configure_model(self, model: nn.Module) -> nn.Module:
        model.eval()
        use_batch_statistics(model)
        return model.requires_grad_(True)  # §3.3: every parameter adapts

    def params_to_adapt(self, model: nn.Module) -> list[nn.Parameter]:
        return [p for p in model.parameters() if p.requires_grad]

    def attach(self, model: nn.Module) -> None:
        super().attach(model)
        self.teacher = frozen_copy(self.model)  # θ'
        self.anchor = frozen_copy(self.model)  # θ0, never updated
        self._restore_pairs = [(p, self._source_state[n]) for n, p in self.model.named_parameters() if p.requires_grad]

    def reset_state(self) -> None:
        self.teacher.load_state_dict(self._source_state)

    @torch.enable_grad()
    def forward_and_adapt(self, inputs) -> torch.Tensor:
        cfg = self.cfg
        student_logits = self.model(inputs)
        with torch.no_grad():
            source_confidence = self.anchor(inputs).softmax(1).max(1).values  # (B,)
            augmented = use_augmentation(source_confidence, cfg.conf_threshold)
            pseudo = augmentation_average(self.teacher, inputs, cfg) if augmented else self.teacher(inputs)
        loss = soft_cross_entropy(student_logits, pseudo).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        ema_update_(self.teacher, self.model, cfg.alpha_teacher)
        restored = stochastic_restore_(self._restore_pairs, cfg.restore_prob)
        total = sum(w.numel() for w, _ in self._restore_pairs)
        self.last_stats = {"loss": float(loss.detach()), "source_confidence": float(source_confidence.mean()),
                           "augmented": float(augmented), "restored_fraction": restored / max(total, 1)}
        return pseudo.detach()
