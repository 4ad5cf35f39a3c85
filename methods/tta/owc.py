"""OWC: the open-set sample filter of "Towards Open-Set Test-Time Adaptation Utilizing the Wisdom of Crowds in
Entropy Minimization", plugged into Tent or EATA.

Lee, Das, Choo, Choi. ICCV 2023. arXiv:2308.06879.
Reference implementation: no official code located; the filter as re-implemented in
https://github.com/gaozhengqing/UniEnt (cifar/ostta.py @ aa5c184, "OSTTA") is the anchor.

Implements
  §3 sample selection (Fig. "overall procedure"): forward the batch through the frozen original model θ_o and the
  adapting model θ_a; with ĉ = argmax_c p_o(c|x), keep x iff p_a(ĉ|x) ≥ p_o(ĉ|x), i.e. drop samples whose
  confidence fell under adaptation (likely wrong or open-set: they go against the "wisdom of crowds");
  entropy minimisation is applied to the kept samples only                              -> confidence_kept
  The filter is the paper; the entropy-minimisation method it plugs into is a parameter: ``base: tent | eata``
  (the paper reports it with Tent and other TTA methods). The base keeps its own filters, weights and
  regulariser; OWC adds its mask to them through the base's ``select`` hook.

Symbols: θ_o → self.source (a frozen copy of the configured model taken at attach), θ_a → self.model,
ĉ → argmax of the source probabilities, p_a(ĉ|x) / p_o(ĉ|x) → confidences compared.

Defaults: base = "tent" (the paper's headline pairing: "49.4% reduced error rates with TENT"); the base's own
hyperparameters come from ``base_params`` over its paper defaults (tent.py, eata.py). At the first batch θ_a = θ_o,
so every sample passes (p_a = p_o) and the step equals the base's.

Deviations
  - UniEnt's re-implementation also subtracts α·H(mean prediction) (its own diversity term, applied alike to its
    Tent and EATA baselines); not part of the filter, not included.
  - With base = "eata", a sample must pass EATA's reliability and redundancy filters and this one, and EATA's
    moving average m follows the samples actually used (see eata.py).
  - Equation numbers and any extra entropy threshold of the paper's full method are unverified: its method
    section was not available here; the rule is from the abstract, the figure caption and UniEnt's code.
  - θ_o keeps the base's test-time normalisation (BatchNorm on batch statistics), as in UniEnt (deep copy after
    configuration), so the two models differ only by the adapted affine parameters.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from adaptbench.protocol import TTAMethod
from adaptbench.registry import Paper, get_method, register
from methods.tta.eata import EATA
from methods.tta.tent import Tent

BASES = {"tent": Tent, "eata": EATA}


@dataclass(frozen=True)
class OWCConfig:
    base: str = "tent"  # the entropy-minimisation method the filter plugs into (abstract: "e.g. TENT")
    base_params: dict = field(default_factory=dict)  # overrides of the base's paper defaults, e.g. {"lr": 0.001}

    def __post_init__(self):
        if self.base not in BASES:
            raise ValueError(f"owc: base must be one of {sorted(BASES)}, got {self.base!r}")
        if not isinstance(self.base_params, dict):
            raise ValueError(f"owc: base_params must be a mapping of {self.base}'s hyperparameters, "
                             f"got {type(self.base_params).__name__}")
        self.base_config()  # unknown or invalid base hyperparameters fail here, named by the base's registry

    def base_config(self):
        return get_method(self.base).make_config(self.base_params)


def confidence_kept(probs_adapted: torch.Tensor, probs_source: torch.Tensor) -> torch.Tensor:
    """§3: with ĉ = argmax p_o, keep p_a(ĉ) ≥ p_o(ĉ). (B, C), (B, C) -> bool (B,)."""
    confidence_source, c_hat = probs_source.max(1)
    confidence_adapted = probs_adapted.gather(1, c_hat.unsqueeze(1)).squeeze(1)
    return confidence_adapted >= confidence_source


@register(
    family="tta",
    paper=Paper(
        title="Towards Open-Set Test-Time Adaptation Utilizing the Wisdom of Crowds in Entropy Minimization",
        arxiv="2308.06879",
        year=2023,
        venue="ICCV",
        authors="Lee, Das, Choo, Choi",
        code="https://github.com/gaozhengqing/UniEnt@aa5c184 (cifar/ostta.py; re-implementation)",
    ),
    config=OWCConfig,
)
class OWC(TTAMethod):
    """The base method (Tent or EATA) learning only from samples whose confidence did not drop under adaptation."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.base: TTAMethod = BASES[cfg.base](cfg.base_config())
        self.source: nn.Module | None = None  # θ_o

    def configure_model(self, model: nn.Module) -> nn.Module:
        return self.base.configure_model(model)

    def params_to_adapt(self, model: nn.Module) -> list[nn.Parameter]:
        return self.base.params_to_adapt(model)

    def attach(self, model: nn.Module) -> None:
        """The base configures, builds its optimizer and snapshots; θ_o is a frozen copy of the configured model."""
        self.base.attach(model)
        self.model, self.optimizer = self.base.model, self.base.optimizer
        self.source = copy.deepcopy(self.model).requires_grad_(False)

    def reset(self) -> None:
        self.base.reset()  # θ_o never changes, so nothing of OWC's own to restore

    def prepare_source(self, model: nn.Module, source_batches) -> None:
        """The base's source-side preparation (Tent and EATA have none: a no-op)."""
        self.base.prepare_source(model, source_batches)

    def prepare_fisher(self, batches) -> None:
        """The base's preparation after attach: EATA's Eq. (9) Fisher information (Tent: a no-op)."""
        self.base.prepare_fisher(batches)

    def forward_and_adapt(self, inputs) -> torch.Tensor:
        if self.source is None:
            raise RuntimeError("owc: forward_and_adapt() before attach(model)")
        with torch.no_grad():
            probs_source = self.source(inputs).softmax(1)  # (B, C)
        confident: list[torch.Tensor] = []

        def select(logits: torch.Tensor) -> torch.Tensor:
            confident.append(confidence_kept(logits.detach().softmax(1), probs_source))
            return confident[-1]

        logits = self.base.forward_and_adapt(inputs, select=select)
        self.last_stats = {**self.base.last_stats, "confident": float(confident[-1].sum())}
        return logits
