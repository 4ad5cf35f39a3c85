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

Speed: ``LowRankLinear.forward`` computes W x + b + s · B A dropout(x) in one autograd node
(``_LowRankLinearFunction``) when nothing can tell the difference: the class's own ``delta_forward``, a plain
nn.Linear base without hooks, one dtype, no autocast. Forward adds s · (t Bᵀ), t = A x, into the base output
in place (``addmm_``, α = s) instead of allocating ΔW x, scaling it and adding it (two full-size passes); the
backward scales the r-wide ∂L/∂t instead of the full-size ∂L/∂y and accumulates ∂L/∂t · A into W ∂L/∂y in
place. Outputs and gradients equal the plain path's up to float rounding; it saves the same tensors (x, t and
the weights). Otherwise (subclasses with their own ``delta_forward``, autocast, a hooked or quantised base)
forward is ``AdaptedLinear.forward``. The fused node is differentiable once: no double backward and no
torch.func transforms through it.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.modules import module as _module

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged or not self._fusable(x):
            return super().forward(x)
        h = self.dropout(x)  # nn.Identity (p = 0) and nn.Dropout in eval mode return x itself
        x2 = x.reshape(-1, x.shape[-1])
        h2 = None if h is x else h.reshape(-1, h.shape[-1])
        y = _LowRankLinearFunction.apply(x2, h2, self.base.weight, self.base.bias, self.lora_A, self.lora_B,
                                         float(self.scaling))
        return y.view(*x.shape[:-1], y.shape[-1])

    def _fusable(self, x: torch.Tensor) -> bool:
        """True when the fused node computes exactly what ``AdaptedLinear.forward`` would: LowRankLinear's own
        ΔW x (not a subclass's), a plain nn.Linear base that no hook watches, one floating dtype, no autocast."""
        base = self.base
        if type(self).delta_forward is not LowRankLinear.delta_forward or "delta_forward" in self.__dict__:
            return False
        if type(base) is not nn.Linear or "forward" in base.__dict__ or _has_hooks(base):
            return False
        if not isinstance(self.scaling, (int, float)) or x.dim() < 1 or torch.is_autocast_enabled(x.device.type):
            return False
        dt = x.dtype
        return (dt.is_floating_point and base.weight.dtype == dt and self.lora_A.dtype == dt
                and self.lora_B.dtype == dt and (base.bias is None or base.bias.dtype == dt))

    def delta_weight(self) -> torch.Tensor:
        """ΔW = s · B A, shape (d_out, d_in)."""
        return self.scaling * (self.lora_B @ self.lora_A)


def _has_hooks(m: nn.Module) -> bool:
    """Module hooks, its own or global, that calling ``m`` would run and the fused path would skip."""
    own = (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks)
    glob = tuple(getattr(_module, n, None) for n in ("_global_forward_hooks", "_global_forward_pre_hooks",
                                                      "_global_backward_hooks", "_global_backward_pre_hooks"))
    return any(own) or any(glob)


class _LowRankLinearFunction(torch.autograd.Function):
    """y = x Wᵀ + b + s · (h Aᵀ) Bᵀ on 2-D rows (n, d_in), h = dropout(x) (``h=None``: h is x).

    Forward: y = addmm(b, x, Wᵀ), t = h Aᵀ (n × r), y += s · t Bᵀ in place. Backward, with g = ∂L/∂y and
    g_t = s · g B (n × r): ∂L/∂x = g W (+ g_t A when h is x, accumulated in place), ∂L/∂h = g_t A,
    ∂L/∂W = gᵀ x, ∂L/∂b = Σ_rows g, ∂L/∂A = g_tᵀ h, ∂L/∂B = s · gᵀ t. Only the gradients asked for are formed.
    The n-long r-wide products are formed as r × n (tᵀ = A hᵀ, g_tᵀ = Bᵀ gᵀ, (gᵀ t)ᵀ = tᵀ g): with r ≪ d the
    BLAS kernels run two to five times faster in that orientation than as n × r."""

    @staticmethod
    def forward(ctx, x, h, weight, bias, lora_A, lora_B, scaling):
        y = torch.addmm(bias, x, weight.t()) if bias is not None else torch.mm(x, weight.t())
        t_t = torch.mm(lora_A, (x if h is None else h).t())  # tᵀ, r × n
        y.addmm_(t_t.t(), lora_B.t(), alpha=scaling)
        need_x, need_h, need_w, _, need_a, need_bb, _ = ctx.needs_input_grad
        need_t = need_x or need_h or need_a  # the gradients that go through t
        # only what the requested gradients read, as autograd's own nodes do (a frozen W under an input
        # without grad is not kept)
        ctx.save_for_backward(x if need_w or (need_a and h is None) else None, h if need_a else None,
                              weight if need_x else None, lora_A if need_x or need_h else None,
                              lora_B if need_t else None, t_t if need_bb else None)
        ctx.scaling = scaling
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        x, h, weight, lora_A, lora_B, t_t = ctx.saved_tensors
        s = ctx.scaling
        need_x, need_h, need_w, need_b, need_a, need_bb, _ = ctx.needs_input_grad
        gx = gh = gw = gb = ga = gbb = None
        if need_x or need_h or need_a:
            gt_t = torch.mm(lora_B.t(), g.t())  # g_tᵀ / s, r × n
            if s != 1.0:
                gt_t.mul_(s)
        if need_x:
            gx = torch.mm(g, weight)
            if h is None:
                gx.addmm_(gt_t.t(), lora_A)
        if need_h:
            gh = torch.mm(gt_t.t(), lora_A)
        if need_w:
            gw = torch.mm(g.t(), x)
        if need_b:
            gb = g.sum(0)
        if need_a:
            ga = torch.mm(gt_t, x if h is None else h)
        if need_bb:
            gbb = torch.mm(t_t, g).t().contiguous()
            if s != 1.0:
                gbb.mul_(s)
        return gx, gh, gw, gb, ga, gbb, None


def wrapped_layers(model: nn.Module, layer_type: type = AdaptedLinear) -> list[tuple[str, nn.Module]]:
    """[(qualified name, layer)] for every ``layer_type`` module of ``model``, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, layer_type)]


def check_rank(method: str, r: int, name: str, linear: nn.Linear) -> None:
    """One-line error when rank r exceeds what the layer ``name`` can hold, min(d_out, d_in)."""
    if r > min(linear.in_features, linear.out_features):
        raise ValueError(f"{method}: r = {r} exceeds min(in, out) = "
                         f"{min(linear.in_features, linear.out_features)} of '{name}'; lower r")
