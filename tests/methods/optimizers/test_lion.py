"""Lion's update rule (arXiv:2302.06675, Alg. 2): sign of the β1-interpolation, decoupled decay, one state tensor."""

import pytest
import torch

from adaptbench.protocol import optimizer_state_bytes
from adaptbench.registry import get_method
from methods.optimizers.lion import LionOptimizer

LR = 1e-2


def reference_lion(theta, grads, lr, beta1, beta2, wd):
    """Alg. 2 written out independently: c = β1 m + (1−β1) g; θ −= lr (sign(c) + λθ); m = β2 m + (1−β2) g."""
    theta, m = theta.clone(), torch.zeros_like(theta)
    for g in grads:
        c = beta1 * m + (1 - beta1) * g
        theta = theta - lr * (torch.sign(c) + wd * theta)
        m = beta2 * m + (1 - beta2) * g
    return theta


def run_lion(theta, grads, **kw):
    p = torch.nn.Parameter(theta.clone())
    opt = LionOptimizer([p], **kw)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    return p.detach(), opt


@pytest.mark.parametrize("steps", [1, 5])
@pytest.mark.parametrize("betas,wd", [((0.9, 0.99), 0.0), ((0.9, 0.99), 0.3), ((0.5, 0.95), 0.1)])
def test_steps_equal_the_formula(steps, betas, wd):
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    grads = [torch.randn(4, 3, generator=gen, dtype=torch.float64) for _ in range(steps)]
    got, _ = run_lion(theta, grads, lr=LR, betas=betas, weight_decay=wd)
    torch.testing.assert_close(got, reference_lion(theta, grads, LR, *betas, wd))


def test_update_uses_the_interpolation_c_not_the_momentum():
    # m1 = 0.01·10 = 0.1; then g2 = −2: c = 0.9·0.1 − 0.2 = −0.11 < 0, but m1 = 0.1 > 0 and m2 = 0.079 > 0
    theta = torch.zeros(3, dtype=torch.float64)
    grads = [torch.full((3,), 10.0, dtype=torch.float64), torch.full((3,), -2.0, dtype=torch.float64)]
    got, _ = run_lion(theta, grads, lr=LR, betas=(0.9, 0.99), weight_decay=0.0)
    torch.testing.assert_close(got, torch.zeros(3, dtype=torch.float64))  # −lr, then +lr (sign(c) = −1)


def test_every_update_element_has_magnitude_lr():
    gen = torch.Generator().manual_seed(1)
    theta = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    grads = [torch.randn(5, 7, generator=gen, dtype=torch.float64) * 10 ** k for k in (-3, 0, 3)]
    p = torch.nn.Parameter(theta.clone())
    opt = LionOptimizer([p], lr=LR, weight_decay=0.0)
    for g in grads:
        before = p.detach().clone()
        p.grad = g
        opt.step()
        torch.testing.assert_close((p.detach() - before).abs(), torch.full_like(theta, LR), rtol=0, atol=1e-12)


def test_state_is_one_momentum_tensor_half_of_adams():
    shapes = [(8, 4), (4,)]
    lion_params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    adam_params = [torch.nn.Parameter(p.detach().clone()) for p in lion_params]
    lion, adam = LionOptimizer(lion_params, lr=LR), torch.optim.Adam(adam_params, lr=LR)
    for params, opt in ((lion_params, lion), (adam_params, adam)):
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
    assert all(list(lion.state[p]) == ["exp_avg"] for p in lion_params)
    param_bytes = sum(p.numel() * p.element_size() for p in lion_params)
    assert optimizer_state_bytes(lion) == param_bytes
    adam_moments = sum(adam.state[p][k].numel() * 4 for p in adam_params for k in ("exp_avg", "exp_avg_sq"))
    assert 2 * optimizer_state_bytes(lion) == adam_moments


def test_build_uses_config_betas_and_skips_decay_on_1d():
    method = get_method("lion").build({"beta1": 0.95, "beta2": 0.98})
    weight, bias = torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(3))
    opt = method.build([("layer.weight", weight), ("layer.bias", bias)], lr=1e-4, weight_decay=0.5)
    assert isinstance(opt, LionOptimizer)
    assert [(g["params"], g["weight_decay"], g["betas"]) for g in opt.param_groups] == [
        ([weight], 0.5, (0.95, 0.98)), ([bias], 0.0, (0.95, 0.98))]


@pytest.mark.parametrize("field,value", [("beta1", 1.0), ("beta1", -0.1), ("beta2", 1.5)])
def test_bad_betas_name_the_field(field, value):
    with pytest.raises(ValueError, match=rf"^lion: {field} must be in \[0, 1\), got"):
        get_method("lion").make_config({field: value})


def test_bad_lr_and_weight_decay_name_the_field():
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match=r"^lion: lr must be > 0, got 0"):
        LionOptimizer(p, lr=0.0)
    with pytest.raises(ValueError, match=r"^lion: weight_decay must be >= 0, got -1"):
        get_method("lion").build({}).build([("w", p[0])], lr=1e-4, weight_decay=-1.0)
