"""The wrapped-Linear layers that adapter files share; no paper of its own (discovery skips ``_`` files).

An adapted layer keeps the frozen base nn.Linear (weight W of shape d_out × d_in, bias b) and computes

    y = W x + b + ΔW x,

where ΔW is the method's update. ``delta_forward(x)`` multiplies x through the method's factors, so ΔW is
never formed during training. ``delta_weight()`` forms ΔW (d_out × d_in) for merging: ``merge()`` folds it
into W in place, ``unmerge()`` subtracts it back, and ``merged_linear()`` returns the plain nn.Linear that
holds W + ΔW (``adaptbench.protocol.fold_wrapped_layers`` puts it back into the model).

``LowRankLinear`` is the LoRA-family layer, ΔW = s · B A (LoRA, arXiv:2106.09685, Eq. (3) with the §4.1
scaling s = α/r). lora.py is exactly this layer. PiSSA, SoMA, CorDA and EVA initialise it from a
decomposition, and KaSA adds a diagonal between the factors. Methods whose update has another form (LoLDU,
SVFit, SORSA, SALT, LaMDA, the three-factor layer of SLoRA/NLoRA/IntTune) subclass ``AdaptedLinear``.

Symbols: W → base.weight, A → lora_A (r × d_in), B → lora_B (d_out × r), α → alpha, s → scaling.
"""

from __future__ import annotations

import math

import torch
from torch import nn

INIT_A = ("kaiming_uniform", "gaussian", None)


class AdaptedLinear(nn.Module):
    """y = W x + b + ΔW x around a frozen ``base`` nn.Linear. A subclass defines ``delta_forward``
    (ΔW x from its factors) and ``delta_weight`` (ΔW as a dense matrix)."""

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = base
        self.merged = False  # True: base.weight holds W + ΔW, so forward skips the update path

    def delta_forward(self, x: torch.Tensor) -> torch.Tensor:
        """ΔW x for x of shape (…, d_in) → (…, d_out), without forming ΔW."""
        raise NotImplementedError

    def delta_weight(self) -> torch.Tensor:
        """ΔW, shape (d_out, d_in)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:
            return y
        return y + self.delta_forward(x)

    @torch.no_grad()
    def merge(self) -> None:
        """W ← W + ΔW in place, once."""
        if not self.merged:
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W ← W − ΔW: undoes ``merge`` (up to rounding) while the factors are unchanged."""
        if self.merged:
            self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
            self.merged = False

    def merged_linear(self) -> nn.Linear:
        """The base nn.Linear with ΔW folded in (the same object, merged in place)."""
        self.merge()
        return self.base


class LowRankLinear(AdaptedLinear):
    """y = W x + b + s · B A dropout(x), s = α/r  (LoRA Eq. 3).

    A starts Kaiming-uniform (a = √5, loralib and PEFT) or N(0, 1/r²) (``init_a="gaussian"``, PEFT's option);
    ``init_a=None`` draws nothing and leaves A at 0 for the caller to set. B starts at 0, so ΔW = 0."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0,
                 init_a: str | None = "kaiming_uniform"):
        if init_a not in INIT_A:
            raise ValueError(f"init_a must be one of {INIT_A}, got {init_a!r}")
        super().__init__(base)
        self.r, self.scaling = r, alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, dtype=base.weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, dtype=base.weight.dtype))
        if init_a == "kaiming_uniform":
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        elif init_a == "gaussian":
            nn.init.normal_(self.lora_A, std=1.0 / r)
        else:
            nn.init.zeros_(self.lora_A)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def delta_forward(self, x: torch.Tensor) -> torch.Tensor:
        # (…, d_in) @ (d_in, r) @ (r, d_out): never materialises the d_out × d_in update during training
        return (self.dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """ΔW = s · B A, shape (d_out, d_in)."""
        return self.scaling * (self.lora_B @ self.lora_A)


def wrapped_layers(model: nn.Module, layer_type: type = AdaptedLinear) -> list[tuple[str, nn.Module]]:
    """[(qualified name, layer)] for every ``layer_type`` module of ``model``, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, layer_type)]


def check_rank(method: str, r: int, name: str, linear: nn.Linear) -> None:
    """One-line error when rank r exceeds what the layer ``name`` can hold, min(d_out, d_in)."""
    if r > min(linear.in_features, linear.out_features):
        raise ValueError(f"{method}: r = {r} exceeds min(in, out) = "
                         f"{min(linear.in_features, linear.out_features)} of '{name}'; lower r")
