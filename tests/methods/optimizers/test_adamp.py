"""AdamP's projection (arXiv:2006.08217, Alg. 2): radial part removed iff max|cos(w, ∇w)| < δ/√dim, per view."""

import pytest
import torch

from adaptbench.protocol import optimizer_state_bytes
from adaptbench.registry import get_method
from methods.optimizers.adamp import AdamPOptimizer

LR, WD = 1e-2, 0.5
CONV, LINEAR = (3, 2, 3, 3), (4, 6)


def rows(x):
    return x.reshape(x.shape[0], -1)


def orthogonal_per_channel(w, gen):
    """A gradient whose every output-channel row is orthogonal to w's row (channel cos = 0)."""
    g = rows(torch.randn(w.shape, generator=gen, dtype=w.dtype))
    w_r = rows(w)
    g = g - (g * w_r).sum(1, keepdim=True) / (w_r * w_r).sum(1, keepdim=True) * w_r
    return g.reshape(w.shape)


def orthogonal_layer_only(w):
    """Rows parallel to w's rows (channel cos = 1) with signs making <w, g> = 0 over the layer (layer cos = 0)."""
    w_r = rows(w)
    sq = (w_r * w_r).sum(1)
    coef = torch.ones_like(sq)
    coef[0] = -(sq[1:].sum() / sq[0])
    return (coef[:, None] * w_r).reshape(w.shape)


def adamp_step(w, g, wd=0.0, steps=1, **kw):
    p = torch.nn.Parameter(w.clone())
    opt = AdamPOptimizer([p], lr=LR, weight_decay=wd, **kw)
    for _ in range(steps):
        p.grad = g(p.detach()) if callable(g) else g.clone()
        opt.step()
    return p.detach() - w, opt


def adam_step(w, g, steps=1):
    p = torch.nn.Parameter(w.clone())
    opt = torch.optim.Adam([p], lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    for _ in range(steps):
        p.grad = g(p.detach()) if callable(g) else g.clone()
        opt.step()
    return p.detach() - w


def radial(w, dw):
    """cos(w, Δw) per channel row and over the whole layer: 0 when the step has no radial component
    (up to the ε = 1e-8 in ŵ = w/(‖w‖ + ε))."""
    w_r, dw_r = rows(w), rows(dw)
    return (w_r * dw_r).sum(1) / (w_r.norm(dim=1) * dw_r.norm(dim=1)), (w * dw).sum() / (w.norm() * dw.norm())


@pytest.mark.parametrize("shape", [CONV, LINEAR])
def test_orthogonal_gradient_is_projected_channel_wise_and_decay_uses_wd_ratio(shape):
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(shape, generator=gen, dtype=torch.float64)
    g = orthogonal_per_channel(w, gen)
    assert radial(w, adam_step(w, g))[0].abs().max() > 1e-2  # plain Adam has a radial component here
    dw, _ = adamp_step(w, g)
    per_channel, _ = radial(w, dw)
    torch.testing.assert_close(per_channel, torch.zeros_like(per_channel), rtol=0, atol=1e-7)
    dw_decayed, _ = adamp_step(w, g, wd=WD)
    torch.testing.assert_close(dw_decayed - dw, -LR * WD * 0.1 * w)  # wd_ratio = 0.1 on projected weights


@pytest.mark.parametrize("shape", [CONV, LINEAR])
def test_layer_view_is_used_when_only_the_layer_is_orthogonal(shape):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g = orthogonal_layer_only(w)
    dw, _ = adamp_step(w, g)
    per_channel, whole = radial(w, dw)
    torch.testing.assert_close(whole, torch.zeros_like(whole), rtol=0, atol=1e-7)
    assert per_channel.abs().max() > 1e-2  # projected as one layer, not per channel


@pytest.mark.parametrize("shape", [CONV, LINEAR])
def test_parallel_gradient_is_not_projected_and_equals_adam(shape):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    grad_fn = lambda current: 2 * current  # ∇‖w‖²: cos = 1 at every step  # noqa: E731
    dw, _ = adamp_step(w, grad_fn, steps=3)
    torch.testing.assert_close(dw, adam_step(w, grad_fn, steps=3))
    dw_decayed, _ = adamp_step(w, 2 * w, wd=WD)
    torch.testing.assert_close(dw_decayed - adamp_step(w, 2 * w)[0], -LR * WD * w)  # full λ, no wd_ratio


@pytest.mark.parametrize("shape", [CONV, LINEAR])
@pytest.mark.parametrize("factor,projected", [(0.9, True), (1.1, False)])
def test_threshold_is_delta_over_sqrt_channel_dim(shape, factor, projected):
    """Every channel row at |cos| = factor·δ/√d, d = numel/C_out; the layer's cos then stays above δ/√numel."""
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(shape, generator=gen, dtype=torch.float64)
    w_r = rows(w)
    c = factor * 0.1 / w_r.shape[1] ** 0.5
    u = rows(orthogonal_per_channel(w, gen))
    g = c * w_r / w_r.norm(dim=1, keepdim=True) + (1 - c**2) ** 0.5 * u / u.norm(dim=1, keepdim=True)
    dw, _ = adamp_step(w, g.reshape(shape))
    per_channel, _ = radial(w, dw)
    if projected:
        torch.testing.assert_close(per_channel, torch.zeros_like(per_channel), rtol=0, atol=1e-7)
    else:
        torch.testing.assert_close(dw, adam_step(w, g.reshape(shape)))


def test_nesterov_uses_beta1_m_plus_one_minus_beta1_g():
    g = torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64)
    dw, _ = adamp_step(torch.ones(3, dtype=torch.float64), g, nesterov=True)
    # step 1: m̂ = g, √v̂ = |g|; numerator β1·m + (1−β1)·g = (1−β1)(1+β1)·g, over 1−β1 → (1+β1)·g
    torch.testing.assert_close(dw, -LR * 1.9 * g / (g.abs() + 1e-8))


def test_bias_is_never_projected():
    gen = torch.Generator().manual_seed(3)
    b = torch.randn(5, generator=gen, dtype=torch.float64)
    g = torch.randn(5, generator=gen, dtype=torch.float64)
    g = g - (g @ b) / (b @ b) * b  # cos(b, g) = 0, which would trigger projection on a matrix
    dw, _ = adamp_step(b, g, steps=2)
    torch.testing.assert_close(dw, adam_step(b, g, steps=2))
    assert (b @ dw).abs() / (b.norm() * dw.norm()) > 1e-2  # the step keeps a radial component


def test_state_is_adams_two_moments():
    _, opt = adamp_step(torch.randn(LINEAR), torch.randn(LINEAR))
    assert optimizer_state_bytes(opt) == 2 * 4 * 24


def test_build_uses_config_and_skips_decay_on_1d():
    method = get_method("adamp").build({"delta": 0.2, "wd_ratio": 0.5})
    weight, bias = torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(3))
    opt = method.build([("layer.weight", weight), ("layer.bias", bias)], lr=1e-3, weight_decay=0.01)
    assert isinstance(opt, AdamPOptimizer)
    assert [(g["weight_decay"], g["delta"], g["wd_ratio"], g["betas"]) for g in opt.param_groups] == [
        (0.01, 0.2, 0.5, (0.9, 0.999)), (0.0, 0.2, 0.5, (0.9, 0.999))]


@pytest.mark.parametrize("field,value", [("beta1", 1.0), ("beta2", -0.5), ("eps", 0.0), ("delta", 0.0),
                                         ("wd_ratio", 1.5), ("nesterov", "yes")])
def test_bad_hyperparameters_name_the_field(field, value):
    with pytest.raises(ValueError, match=rf"^adamp: {field} must be"):
        get_method("adamp").make_config({field: value})


def test_bad_lr_names_the_field():
    with pytest.raises(ValueError, match=r"^adamp: lr must be > 0, got -0.1"):
        AdamPOptimizer([torch.nn.Parameter(torch.zeros(2))], lr=-0.1)
