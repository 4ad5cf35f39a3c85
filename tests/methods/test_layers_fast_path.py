"""LowRankLinear against y = W x + b + s · B A x written out by hand in float64, gradients included.

The reference below uses no autograd: with upstream gradient g (rows g_i) of L = Σ g ⊙ y and
G = Σ_i g_i x_iᵀ (d_out × d_in),
    ∂L/∂x = g (W + s B A),  ∂L/∂b = Σ_i g_i,  ∂L/∂W = G,  ∂L/∂A = s Bᵀ G,  ∂L/∂B = s G Aᵀ.
Whatever LowRankLinear.forward does internally (fused node or the generic AdaptedLinear path), its output and
gradients must match these. Merged, the layer is the plain base holding W + s B A and A, B get no gradient.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from methods.adapters._layers import AdaptedLinear, LowRankLinear

D_IN, D_OUT, R, ALPHA = 6, 5, 3, 4.5  # s = α / r = 1.5: a scaling ≠ 1 catches a missed or doubled scale


def make_layer(dropout: float, bias: bool, dtype=torch.float64, seed: int = 0) -> LowRankLinear:
    torch.manual_seed(seed)
    base = nn.Linear(D_IN, D_OUT, bias=bias).to(dtype)
    base.weight.requires_grad_(False)
    layer = LowRankLinear(base, R, ALPHA, dropout=dropout, init_a="gaussian")
    with torch.no_grad():
        layer.lora_B.normal_()  # B = 0 at init would hide every B·A term
    return layer


def by_hand(W, b, A, B, s, x, g, merged):
    """(y, ∂L/∂x, ∂L/∂b, ∂L/∂W, ∂L/∂A, ∂L/∂B) for L = Σ g ⊙ y, y = x (W + s B A)ᵀ + b, rows flattened."""
    W_eff = W if merged else W + s * B @ A  # merged: W already holds W0 + s B A
    x2, g2 = x.reshape(-1, D_IN), g.reshape(-1, D_OUT)
    y = x2 @ W_eff.T + (b if b is not None else 0)
    G = g2.T @ x2
    gA = None if merged else s * B.T @ G
    gB = None if merged else s * G @ A.T
    return (y.reshape(*x.shape[:-1], D_OUT), (g2 @ W_eff).reshape(x.shape),
            None if b is None else g2.sum(0), G, gA, gB)


SHAPES = [(7, D_IN), (2, 4, D_IN)]


@pytest.mark.parametrize("shape", SHAPES, ids=["2d", "3d"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("merged", [False, True], ids=["unmerged", "merged"])
@pytest.mark.parametrize("bias", ["trainable", "frozen", "none"])
def test_output_and_gradients_equal_the_formula(shape, dropout, merged, bias):
    layer = make_layer(dropout, bias != "none")
    if bias == "trainable":
        layer.base.bias.requires_grad_(True)
    elif bias == "frozen":
        layer.base.bias.requires_grad_(False)
    if dropout > 0:
        layer.eval()  # dropout is the identity in eval mode, so the formula holds exactly
    W = layer.base.weight.detach().clone()
    b = None if layer.base.bias is None else layer.base.bias.detach().clone()
    A, B = layer.lora_A.detach().clone(), layer.lora_B.detach().clone()
    if merged:
        layer.merge()
        W = layer.base.weight.detach().clone()
    g = torch.randn(shape[:-1] + (D_OUT,), dtype=torch.float64)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)

    y = layer(x)
    (y * g).sum().backward()

    y_ref, gx_ref, gb_ref, _, gA_ref, gB_ref = by_hand(W, b, A, B, layer.scaling, x.detach(), g, merged)
    tol = dict(rtol=1e-12, atol=1e-12)
    assert y.shape == y_ref.shape
    torch.testing.assert_close(y, y_ref, **tol)
    torch.testing.assert_close(x.grad, gx_ref, **tol)
    if bias == "trainable":
        torch.testing.assert_close(layer.base.bias.grad, gb_ref, **tol)
    elif bias == "frozen":
        assert layer.base.bias.grad is None
    if merged:
        assert layer.lora_A.grad is None and layer.lora_B.grad is None
    else:
        torch.testing.assert_close(layer.lora_A.grad, gA_ref, **tol)
        torch.testing.assert_close(layer.lora_B.grad, gB_ref, **tol)
    assert layer.base.weight.grad is None


@pytest.mark.parametrize("shape", SHAPES, ids=["2d", "3d"])
def test_trainable_base_weight_and_frozen_input(shape):
    """∂L/∂W = G when the base weight trains; an input without grad gets none and A, B still do."""
    layer = make_layer(0.0, True)
    layer.base.weight.requires_grad_(True)
    W, b = layer.base.weight.detach().clone(), layer.base.bias.detach().clone()
    A, B = layer.lora_A.detach().clone(), layer.lora_B.detach().clone()
    x = torch.randn(shape, dtype=torch.float64)
    g = torch.randn(shape[:-1] + (D_OUT,), dtype=torch.float64)
    (layer(x) * g).sum().backward()
    _, _, gb_ref, gW_ref, gA_ref, gB_ref = by_hand(W, b, A, B, layer.scaling, x, g, False)
    tol = dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.base.weight.grad, gW_ref, **tol)
    torch.testing.assert_close(layer.base.bias.grad, gb_ref, **tol)
    torch.testing.assert_close(layer.lora_A.grad, gA_ref, **tol)
    torch.testing.assert_close(layer.lora_B.grad, gB_ref, **tol)


def test_the_plain_layer_takes_the_fused_path():
    """Guards that the tests above exercise the fused node, not only the generic fallback."""
    layer = make_layer(0.0, True)
    x = torch.randn(2, 4, D_IN, dtype=torch.float64, requires_grad=True)
    assert layer._fusable(x)
    names, stack = set(), [layer(x).grad_fn]
    while stack:
        node = stack.pop()
        if node is not None:
            names.add(type(node).__name__)
            stack.extend(n for n, _ in node.next_functions)
    assert any("LowRankLinearFunction" in n for n in names), names


def grads(layer, x, g):
    for p in (x, layer.lora_A, layer.lora_B):
        p.grad = None
    y = layer(x)
    (y * g).sum().backward()
    return y.detach(), x.grad.clone(), layer.lora_A.grad.clone(), layer.lora_B.grad.clone()


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_float32_training_mode_matches_the_generic_path(dropout):
    """In float32 and training mode (dropout drawing its mask from the same seed), forward equals
    AdaptedLinear.forward, the plain y = base(x) + delta_forward(x), up to float rounding."""
    layer = make_layer(dropout, True, dtype=torch.float32)
    layer.train()
    x = torch.randn(3, 8, D_IN, requires_grad=True)
    g = torch.randn(3, 8, D_OUT)
    torch.manual_seed(1)
    fused = grads(layer, x, g)
    generic = LowRankLinear.forward
    try:
        LowRankLinear.forward = AdaptedLinear.forward
        torch.manual_seed(1)
        plain = grads(layer, x, g)
    finally:
        LowRankLinear.forward = generic
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_subclass_delta_forward_is_used():
    """A subclass that overrides delta_forward (as KaSA does) is never bypassed by the fused path."""

    class Doubled(LowRankLinear):
        def delta_forward(self, x):
            return 2 * super().delta_forward(x)

    torch.manual_seed(0)
    base = nn.Linear(D_IN, D_OUT).double()
    layer = Doubled(base, R, ALPHA, init_a="gaussian")
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, D_IN, dtype=torch.float64)
    expected = base(x) + 2 * layer.scaling * x @ layer.lora_A.T @ layer.lora_B.T
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)


def test_hooks_on_the_base_still_run():
    layer = make_layer(0.0, True)
    seen = []
    handle = layer.base.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    x = torch.randn(2, 4, D_IN, dtype=torch.float64)
    y = layer(x)
    handle.remove()
    assert seen == [x.shape]
    W, b = layer.base.weight, layer.base.bias
    torch.testing.assert_close(y, x @ (W + layer.scaling * layer.lora_B @ layer.lora_A).T + b)


def test_autocast_falls_back_and_runs():
    layer = make_layer(0.0, True, dtype=torch.float32)
    x = torch.randn(2, 4, D_IN)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert layer.lora_A.grad is not None and layer.lora_B.grad is not None
