"""Label Shift Adapter for Test-Time Adaptation under Covariate and Label Shifts.

Park, Yang, Choo, Yun. ICCV 2023. arXiv:2308.08810.
Reference implementation: none published. Reconstructed from the abstract, Fig. 3 and third-party summaries; the
full text was not available, so no equation numbers are given: verify §3 against the PDF before trusting numbers.

Implements (§3, reconstructed)
  adapter       (γ, β, ΔW, Δb) = g_φ(π): a small MLP of the label distribution π giving a feature affine and a
                classifier delta, i.e. the parameters of a small part of the frozen source model.
  adapted head  f(x; π) = (W + ΔW)·h' + b + Δb, h' = γ ⊙ h(x) + β, h = model.features, (W, b) the source head;
                computed as classifier(h') + ΔW·h' + Δb (equal for a linear head; any head works).
  training      (prepare_source; only φ trains) on labelled source data with simulated π_t ~ Dirichlet(a·1) and the
                generalised logit-adjusted loss L = CE(f(x; π_t) + log π_s − log π_t, y), whose minimiser gives
                softmax f(x; π_t) = p_t(y | x) under label shift (π_s: source label frequencies).
  estimate      π̂_t = m·π̂_{t−1} + (1 − m)·(1/B)·Σ_i softmax f(x_i; π̂_{t−1})  (EMA of predicted probabilities;
                its fixed point is the EM / maximum-likelihood prior of Saerens et al. 2002).
  plug-in       the adapted model is handed to a base TTA method (base_method) that adapts it as usual.

Symbols: π → pi, π_s → source_prior, m → ema_momentum, a → dirichlet_concentration, g_φ → LabelShiftAdapterNet.

Runner hook: ``prepare_source(model, source_batches)`` before ``attach(model)`` with labelled source batches, each
``(inputs, labels)`` or a dict with a ``labels`` key. Without it the adapter outputs the identity
(γ = 1, β = ΔW = Δb = 0) and the method is its base method (or the source model).

Deviations
  - The paper maps π to a scalar imbalance degree (its label distributions are ordered long-tailed ones); we
    feed the full log-ratio log(π·C), since our streams' label distributions need not be ordered.
  - Dirichlet sampling of π_t, the hidden width, steps, batch size, learning rate and m are ours: the paper's
    values were not retrieved.
  - π̂ starts at π_s (no shift assumed until the stream says otherwise); each batch is predicted with π̂_{t−1},
    then π̂ is updated (one forward per batch).
  - base_method defaults to "none" (the adapter on the frozen source model); the paper reports it inside TTA
    methods (Tent, ...), which grids select with base_method. The base runs with its own paper defaults, must
    adapt the model in place and must not train the adapter (norm-layer methods qualify; an error says otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from adaptbench import registry
from adaptbench.protocol import TTAMethod
from adaptbench.registry import Paper, register


@dataclass(frozen=True)
class LabelShiftAdapterConfig:
    base_method: str = "none"  # registered TTA method it plugs into (paper: Tent and others); "none" = adapter only
    ema_momentum: float = 0.9  # m of the π̂ EMA; ours (paper value not retrieved)
    hidden_dim: int = 64  # width of g_φ; ours
    adapter_steps: int = 1000  # prepare_source: optimisation steps of φ; ours
    adapter_batch_size: int = 256  # prepare_source: source samples per step; ours
    adapter_lr: float = 1e-3  # prepare_source: Adam learning rate of φ (its own optimizer, not TTAOptimConfig); ours
    dirichlet_concentration: float = 1.0  # a, simulated π_t ~ Dirichlet(a·1); ours (1 = uniform on the simplex)
    prior_floor: float = 1e-3  # smallest class probability fed to g_φ or a log; ours

    def __post_init__(self):
        if not 0.0 <= self.ema_momentum < 1.0:
            raise ValueError(f"label_shift_adapter: ema_momentum must be in [0, 1), got {self.ema_momentum!r}")
        for name in ("hidden_dim", "adapter_steps", "adapter_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"label_shift_adapter: {name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("adapter_lr", "dirichlet_concentration"):
            if not getattr(self, name) > 0:
                raise ValueError(f"label_shift_adapter: {name} must be > 0, got {getattr(self, name)!r}")
        if not 0.0 < self.prior_floor < 1.0:
            raise ValueError(f"label_shift_adapter: prior_floor must be in (0, 1), got {self.prior_floor!r}")


def floor_prior(pi: torch.Tensor, floor: float) -> torch.Tensor:
    """π clamped below at the floor and renormalised; (..., C) -> (..., C)."""
    pi = pi.clamp(min=floor)
    return pi / pi.sum(-1, keepdim=True)


def prior_input(pi: torch.Tensor, floor: float) -> torch.Tensor:
    """Adapter input log(π·C): zero for the uniform distribution; (..., C) -> (..., C)."""
    return (floor_prior(pi, floor) * pi.shape[-1]).log()


def adapted_logits(h, classifier, gamma, beta, delta_w, delta_b) -> torch.Tensor:
    """f = classifier(h') + ΔW·h' + Δb, h' = γ ⊙ h + β.

    Shapes: h (B, D), γ and β (P, D), ΔW (P, C, D), Δb (P, C) with P ∈ {1, B} -> (B, C)."""
    h2 = gamma * h + beta  # (B, D)
    return classifier(h2) + (delta_w @ h2.unsqueeze(-1)).squeeze(-1) + delta_b


def logit_adjusted_loss(logits, labels, source_prior, target_prior) -> torch.Tensor:
    """L = CE(f + log π_s − log π_t, y); logits (B, C), π_s (C,), π_t (B, C) -> scalar."""
    return F.cross_entropy(logits + source_prior.log() - target_prior.log(), labels)


def update_estimate(pi: torch.Tensor, probs: torch.Tensor, momentum: float) -> torch.Tensor:
    """π̂_t = m·π̂_{t−1} + (1 − m)·mean_i p_i; (C,), (B, C) -> (C,)."""
    return momentum * pi + (1.0 - momentum) * probs.mean(0)


def train_adapter(adapter, classifier, h, y, source_prior, cfg: LabelShiftAdapterConfig) -> float:
    """min_φ E_{π_t ~ Dir(a·1)} E_{(h, y) ~ source} L(π_t), one π_t per sample; the head stays frozen."""
    frozen = {n: p.detach() for n, p in classifier.named_parameters()}

    def head(h2):  # the source head with detached weights: no gradient reaches it
        return torch.func.functional_call(classifier, frozen, (h2,))

    sampler = torch.distributions.Dirichlet(torch.full_like(source_prior, cfg.dirichlet_concentration))
    optimizer = torch.optim.Adam(adapter.parameters(), lr=cfg.adapter_lr)
    for _ in range(cfg.adapter_steps):
        idx = torch.randint(0, h.shape[0], (min(cfg.adapter_batch_size, h.shape[0]),), device=h.device)
        target = floor_prior(sampler.sample((idx.shape[0],)), cfg.prior_floor)  # (B, C)
        logits = adapted_logits(h[idx], head, *adapter(prior_input(target, cfg.prior_floor)))
        loss = logit_adjusted_loss(logits, y[idx], source_prior, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return float(loss.detach())


class LabelShiftAdapterNet(nn.Module):
    """g_φ: log(π·C) -> (γ, β, ΔW, Δb); the output layer starts at zero, so g_φ starts as the identity."""

    def __init__(self, num_classes: int, dim: int, hidden_dim: int):
        super().__init__()
        self.num_classes, self.dim = num_classes, dim
        self.body = nn.Sequential(nn.Linear(num_classes, hidden_dim), nn.ReLU())
        self.out = nn.Linear(hidden_dim, 2 * dim + num_classes * dim + num_classes)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, log_ratio: torch.Tensor):
        c, d = self.num_classes, self.dim
        o = self.out(self.body(log_ratio))  # (P, 2D + CD + C)
        return 1.0 + o[:, :d], o[:, d:2 * d], o[:, 2 * d:2 * d + c * d].reshape(-1, c, d), o[:, 2 * d + c * d:]


class AdaptedClassifier(nn.Module):
    """The source head with g_φ(π̂) plugged in; π̂ is a buffer, so snapshots and reset() cover it."""

    def __init__(self, source: nn.Module, adapter: LabelShiftAdapterNet, prior: torch.Tensor, floor: float):
        super().__init__()
        self.source, self.adapter, self.floor = source, adapter, floor
        self.register_buffer("pi", prior.clone())

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return adapted_logits(h, self.source, *self.adapter(prior_input(self.pi.unsqueeze(0), self.floor)))


class LabelShiftModel(nn.Module):
    """A TTA model (features + classifier) whose classifier is the adapted head."""

    def __init__(self, model: nn.Module, classifier: AdaptedClassifier):
        super().__init__()
        self.model, self.classifier = model, classifier  # model.classifier is shared with classifier.source

    def features(self, inputs) -> torch.Tensor:
        return self.model.features(inputs)

    def forward(self, inputs) -> torch.Tensor:
        return self.classifier(self.features(inputs))


def split_batch(batch):
    """A labelled source batch: ``(inputs, labels)`` or a dict of model inputs holding ``labels``."""
    if isinstance(batch, dict):
        return {k: v for k, v in batch.items() if k != "labels"}, batch["labels"]
    return tuple(batch)


@register(
    family="tta",
    paper=Paper(
        title="Label Shift Adapter for Test-Time Adaptation under Covariate and Label Shifts",
        arxiv="2308.08810",
        year=2023,
        venue="ICCV",
        authors="Park, Yang, Choo, Yun",
        code="",
    ),
    config=LabelShiftAdapterConfig,
)
class LabelShiftAdapter(TTAMethod):
    """Online label-distribution estimate fed to a source-trained adapter that re-parameterises the head."""

    TEST_OVERRIDES = {"adapter_steps": 20}  # the contract test checks the plumbing, not the adapter's fit

    def __init__(self, cfg: LabelShiftAdapterConfig):
        super().__init__(cfg)
        self.adapter, self.source_prior, self.base = None, None, None  # g_φ, π_s, the base TTA method

    def _ensure_adapter(self, model: nn.Module) -> None:
        """g_φ sized by the head: D = in_features of its first nn.Linear, C = out_features of its last."""
        linears = [m for m in model.classifier.modules() if isinstance(m, nn.Linear)]
        if not linears:
            name = type(model.classifier).__name__
            raise TypeError(f"label_shift_adapter: model.classifier ({name}) has no nn.Linear to size the adapter")
        if self.adapter is None:
            num_classes = linears[-1].out_features
            self.adapter = LabelShiftAdapterNet(num_classes, linears[0].in_features, self.cfg.hidden_dim)
            self.source_prior = torch.full((num_classes,), 1.0 / num_classes)

    def prepare_source(self, model: nn.Module, source_batches) -> None:
        """Train g_φ on labelled source batches with the source model frozen (before attach). The base method is
        built in ``configure_model``, after this, so its own ``prepare_source`` is not called (the norm-layer bases
        it supports have none)."""
        if self.model is not None:
            raise RuntimeError("label_shift_adapter: call prepare_source(model, source_batches) before attach(model)")
        model.eval()
        with torch.no_grad():
            pairs = [split_batch(b) for b in source_batches]
            if not pairs:
                raise ValueError("label_shift_adapter: prepare_source got no batches; "
                                 "pass labelled (inputs, labels) batches")
            h = torch.cat([model.features(x) for x, _ in pairs])
            y = torch.cat([y for _, y in pairs]).long()
        self._ensure_adapter(model)
        counts = torch.bincount(y, minlength=self.adapter.num_classes).to(h.dtype)
        self.source_prior = floor_prior(counts / counts.sum(), self.cfg.prior_floor)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny matrices: CPU intra-op threads only add synchronisation (30x on busy cores)
        try:
            loss = train_adapter(self.adapter.to(h.device, h.dtype), model.classifier, h, y, self.source_prior, self.cfg)
        finally:
            torch.set_num_threads(threads)
        self.last_stats = {"adapter_loss": loss}

    def configure_model(self, model: nn.Module) -> nn.Module:
        self._ensure_adapter(model)
        ref = next(model.classifier.parameters())  # the adapter lives where the head does
        self.adapter.to(ref.device, ref.dtype).requires_grad_(False)
        self.source_prior = self.source_prior.to(ref.device, ref.dtype)
        head = AdaptedClassifier(model.classifier, self.adapter, self.source_prior, self.cfg.prior_floor)
        wrapped = LabelShiftModel(model, head)
        if self.cfg.base_method == "none":
            return wrapped.eval().requires_grad_(False)
        spec = registry.get_method(self.cfg.base_method)
        if spec.family != "tta":
            raise ValueError(f"label_shift_adapter: base_method '{spec.name}' is a {spec.family} method; "
                             f"choose a TTA method: {', '.join(registry.available('tta'))}")
        self.base = spec.build()
        self.base.attach(wrapped)
        if any(p.requires_grad for p in self.adapter.parameters()):
            raise ValueError(f"label_shift_adapter: base_method '{spec.name}' trains the adapter's own weights; "
                             "choose one that adapts norm layers (e.g. tent)")
        return wrapped

    def params_to_adapt(self, model: nn.Module) -> list[nn.Parameter]:
        return []  # the base method owns its optimizer

    def reset_state(self) -> None:
        if self.base is not None:
            self.base.reset()

    def prepare_fisher(self, batches) -> None:
        """The base method's own preparation (EATA's Fisher, after attach; a no-op for Tent); none without a base."""
        if self.base is not None:
            self.base.prepare_fisher(batches)

    def forward_and_adapt(self, inputs) -> torch.Tensor:
        if self.base is None:
            with torch.no_grad():
                logits, stats = self.model(inputs), {}
        else:
            logits = self.base.forward_and_adapt(inputs)
            stats = {f"base_{k}": v for k, v in self.base.last_stats.items()}
        head = self.model.classifier
        with torch.no_grad():
            head.pi.copy_(update_estimate(head.pi, logits.detach().softmax(1), self.cfg.ema_momentum))
        self.last_stats = {**stats, "prior_max": float(head.pi.max()), "prior_min": float(head.pi.min())}
        return logits
