"""GradNormLoRP (arXiv:2412.19616): W = diag(m)·V/‖V‖_row reproduces W at init, the gradients are the
weight-norm formula, and the direction's update is α·P·Adam(Pᵀ∇_V) with P from the SVD of ∇_V."""

import copy

import pytest
import torch

from adaptbench import tasks
from adaptbench.protocol import optimizer_state_bytes
from adaptbench.registry import get_method
from adaptbench.build import build_model, trainable_state
from methods.optimizers.gradnormlorp import (GradNormLoRPAdamW, WeightNormLinear, codebook, dequantize, merge,
                                             quantize)

LR, EPS, SCALE = 1e-2, 1e-6, 4.0


def method(**overrides):
    return get_method("gradnormlorp").build({"target_modules": ("0", "2"), **overrides})


def toy(seed=0, d_in=6, d_hidden=9, d_out=4):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d_in, d_hidden), torch.nn.Tanh(), torch.nn.Linear(d_hidden, d_out))


def reference_projector(grad, r):
    """GaLore 'std' side: right singular vectors when rows ≥ cols, else left ones (computed here, float64)."""
    u, _, vh = torch.linalg.svd(grad.double(), full_matrices=False)
    return vh[:r].T if grad.shape[0] >= grad.shape[1] else u[:, :r]


def test_weight_norm_reproduces_w_at_init_on_tiny_bert(batch):
    spec = tasks.get_task("syn_sentiment")
    _, base, _ = build_model("full", {}, "tiny-bert", spec, 0)
    _, normed, _ = build_model("full", {}, "tiny-bert", spec, 0, get_method("gradnormlorp").build())
    layers = [m for m in normed.modules() if isinstance(m, WeightNormLinear)]
    assert len(layers) == 2 * 6  # q, k, v, attention output, intermediate, output in each of 2 layers
    assert not any(isinstance(m, WeightNormLinear) for m in normed.classifier.modules())  # the head stays plain
    assert type(normed.bert.pooler.dense) is torch.nn.Linear
    base_w = base.bert.encoder.layer[0].attention.self.query.weight
    q = normed.bert.encoder.layer[0].attention.self.query
    torch.testing.assert_close(q.magnitude, base_w.norm(dim=1))
    base.eval(), normed.eval()
    with torch.no_grad():
        torch.testing.assert_close(normed(**batch).logits, base(**batch).logits, rtol=0, atol=1e-5)


def test_gradients_equal_the_weight_norm_formula():
    torch.manual_seed(1)
    linear = torch.nn.Linear(5, 3).double()
    layer = WeightNormLinear(linear)
    with torch.no_grad():  # move away from init so ‖v‖ ≠ m
        layer.direction.mul_(torch.rand(3, 1, dtype=torch.float64) + 0.5).add_(0.1)
        layer.magnitude.mul_(1.7)
    x = torch.randn(7, 5, dtype=torch.float64)
    layer(x).pow(3).sum().backward()
    v, g = layer.direction.detach(), layer.magnitude.detach()
    w = (g[:, None] * v / v.norm(dim=1, keepdim=True)).requires_grad_(True)
    torch.nn.functional.linear(x, w, linear.bias).pow(3).sum().backward()
    grad_w, v_hat = w.grad, v / v.norm(dim=1, keepdim=True)
    grad_g = (v_hat * grad_w).sum(1)  # ∇_g = ŵ·∇_w
    grad_v = g[:, None] / v.norm(dim=1, keepdim=True) * (grad_w - grad_g[:, None] * v_hat)  # (g/‖v‖)(I − ŵŵᵀ)∇_w
    torch.testing.assert_close(layer.magnitude.grad, grad_g)
    torch.testing.assert_close(layer.direction.grad, grad_v)


@pytest.mark.parametrize("d_in,d_hidden", [(6, 9), (9, 6)])  # first layer: right side, then left side
def test_direction_steps_equal_projected_adam(d_in, d_hidden):
    r, gap, wd = 2, 2, 0.1
    net = method(rank=r, update_proj_gap=gap).prepare_model(toy(d_in=d_in, d_hidden=d_hidden).double())
    opt = method(rank=r, update_proj_gap=gap, scale=SCALE).build(net.named_parameters(), LR, wd)
    direction = net[0].direction
    m = v = p_t = None
    x = torch.randn(8, d_in, dtype=torch.float64)
    for t in range(1, 5):
        before = direction.detach().clone()
        net(x * t).pow(2).sum().backward()
        grad = direction.grad.detach().clone()
        opt.step()
        opt.zero_grad()
        if (t - 1) % gap == 0:  # P_t recomputed at t = 0, T, 2T, … (0-based)
            p_t = reference_projector(grad, r)
        low = grad @ p_t if grad.shape[0] >= grad.shape[1] else p_t.T @ grad
        m = low * 0.1 if m is None else 0.9 * m + 0.1 * low
        v = low**2 * 0.001 if v is None else 0.999 * v + 0.001 * low**2
        n = (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + EPS)
        back = SCALE * (n @ p_t.T if grad.shape[0] >= grad.shape[1] else p_t @ n)
        expected = before * (1 - LR * wd) - LR * back
        torch.testing.assert_close(direction.detach(), expected)
        assert torch.linalg.matrix_rank(direction.detach() - before * (1 - LR * wd)) <= r


def test_without_directions_it_is_adamw():
    torch.manual_seed(2)
    a, b = torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))
    a2, b2 = torch.nn.Parameter(a.detach().clone()), torch.nn.Parameter(b.detach().clone())
    ours = method().build([("w.weight", a), ("w.bias", b)], LR, 0.1)
    ref = torch.optim.AdamW([{"params": [a2], "weight_decay": 0.1}, {"params": [b2], "weight_decay": 0.0}],
                            lr=LR, eps=EPS)
    for step in range(3):
        grads = torch.randn(4, 3), torch.randn(3)
        for (p, q), g in zip(((a, a2), (b, b2)), grads):
            p.grad, q.grad = g.clone(), g.clone()
        ours.step(), ref.step()
    torch.testing.assert_close(a, a2), torch.testing.assert_close(b, b2)


def test_state_bytes_against_adamw_on_a_sample_shape():
    """(256, 64) layer, r = 8: low-rank m, v (256·8 each) + P (64·8) + m, v of the magnitude (256 each)."""
    torch.manual_seed(3)
    net = method(rank=8).prepare_model(torch.nn.Sequential(torch.nn.Linear(64, 256, bias=False)))
    opt = method(rank=8).build(net.named_parameters(), LR, 0.0)
    net(torch.randn(5, 64)).sum().backward()
    opt.step()
    ours = optimizer_state_bytes(opt)
    assert ours == 4 * (2 * 256 * 8 + 64 * 8 + 2 * 256)
    dense = torch.nn.Parameter(torch.randn(256, 64))
    adamw = torch.optim.AdamW([dense], lr=LR)
    dense.grad = torch.randn(256, 64)
    adamw.step()
    assert optimizer_state_bytes(adamw) == 4 * 2 * 256 * 64 + 4  # m, v + the step tensor
    assert ours / optimizer_state_bytes(adamw) == pytest.approx(20480 / 131076)  # ≈ 0.156 of AdamW
    net8 = method(rank=8, eight_bit=True).prepare_model(torch.nn.Sequential(torch.nn.Linear(64, 256, bias=False)))
    opt8 = method(rank=8, eight_bit=True).build(net8.named_parameters(), LR, 0.0)
    net8(torch.randn(5, 64)).sum().backward()
    opt8.step()
    # one byte per moment entry, one fp32 absmax per moment tensor (all < 2048 entries), P_t in fp32
    assert optimizer_state_bytes(opt8) == 2 * 256 * 8 + 2 * 256 + 4 * 4 + 4 * 64 * 8  # 6,672 B ≈ 0.051 of AdamW


def test_quantisation_round_trip_and_positive_second_moments_stay_positive():
    torch.manual_seed(4)
    x = torch.randn(5000) * torch.logspace(-3, 0, 5000)
    codes, absmax = quantize(x, True, 2048)
    assert codes.dtype == torch.uint8 and codes.numel() == 5000 and absmax.numel() == 3
    back = dequantize(codes, absmax, True, 2048, x.shape)
    big = x.abs() > 1e-4 * x.abs().max()
    assert ((back - x).abs()[big] / x.abs()[big]).max() < 0.07  # log-spaced codes: ≤ half a 10^(7/126) step
    v = x**2 * 1e-20
    v_codes, v_absmax = quantize(v, False, 2048)
    assert (dequantize(v_codes, v_absmax, False, 2048, v.shape)[v > 0] > 0).all()
    assert codebook(True).numel() == 255 and codebook(False).numel() == 256


def test_eight_bit_tracks_32_bit_and_stores_one_byte_per_moment():
    x = torch.randn(16, 6)
    nets, opts = [], []
    for eight in (False, True):
        net = method(rank=2, eight_bit=eight).prepare_model(toy())
        nets.append(net), opts.append(method(rank=2, eight_bit=eight).build(net.named_parameters(), 1e-3, 0.0))
    start = [p.detach().clone() for p in nets[0].parameters()]
    for _ in range(5):
        for net, opt in zip(nets, opts):
            net(x).pow(2).sum().backward()
            opt.step(), opt.zero_grad()
    for p32, p8, p0 in zip(nets[0].parameters(), nets[1].parameters(), start):
        assert (p8 - p32).norm() <= 0.05 * (p32 - p0).norm()  # the 8-bit trajectory stays within 5% of the step
    fp32 = sum(4 * s["exp_avg"].numel() * 2 for s in opts[0].state.values())
    eight = sum(s["exp_avg"].numel() * 2 + 4 * (s["exp_avg_absmax"].numel() + s["exp_avg_sq_absmax"].numel())
                for s in opts[1].state.values())
    projectors = sum(4 * s["projector"].numel() for s in opts[1].state.values() if "projector" in s)
    assert all(s["exp_avg"].dtype == torch.uint8 for s in opts[1].state.values())
    assert optimizer_state_bytes(opts[1]) == eight + projectors
    assert optimizer_state_bytes(opts[0]) == fp32 + projectors



def test_eight_bit_state_stays_one_byte_per_moment_through_a_checkpoint():
    # torch's Optimizer.load_state_dict casts state tensors to the parameter's dtype; the codes must come back uint8
    x = torch.randn(16, 6)

    def build():
        net = method(rank=2, eight_bit=True).prepare_model(toy())
        return net, method(rank=2, eight_bit=True).build(net.named_parameters(), 1e-3, 0.0)

    net, opt = build()
    net(x).pow(2).sum().backward()
    opt.step(), opt.zero_grad()
    saved = (copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict()), optimizer_state_bytes(opt))
    fresh, fresh_opt = build()
    fresh.load_state_dict(saved[0])
    fresh_opt.load_state_dict(saved[1])
    assert all(s["exp_avg"].dtype == s["exp_avg_sq"].dtype == torch.uint8 for s in fresh_opt.state.values())
    assert optimizer_state_bytes(fresh_opt) == saved[2]
    for n, o in ((net, opt), (fresh, fresh_opt)):
        n(x).pow(2).sum().backward()
        o.step()
    for a, b in zip(net.parameters(), fresh.parameters()):
        assert torch.equal(a, b)


def test_merge_and_evaluator_rebuild_give_the_trained_function():
    net = method(rank=2).prepare_model(toy())
    opt = method(rank=2).build(net.named_parameters(), LR, 0.0)
    x = torch.randn(4, 6)
    for _ in range(3):
        net(x).pow(2).sum().backward()
        opt.step(), opt.zero_grad()
    rebuilt = method(rank=2).prepare_model(toy())  # the evaluator: same base, prepare_model, load m and V
    rebuilt.load_state_dict(trainable_state(net), strict=False)
    torch.testing.assert_close(rebuilt(x), net(x))
    merged = merge(copy.deepcopy(net))
    assert isinstance(merged[0], torch.nn.Linear) and not isinstance(merged[0], WeightNormLinear)
    torch.testing.assert_close(merged(x), net(x))


def test_build_groups_directions_with_rank():
    net = method().prepare_model(toy())
    opt = method().build(net.named_parameters(), LR, 0.01)
    assert isinstance(opt, GradNormLoRPAdamW)
    lowrank = [g for g in opt.param_groups if g["rank"] is not None]
    assert lowrank[0]["params"] == [net[0].direction, net[2].direction] and lowrank[0]["weight_decay"] == 0.01
    magnitudes = [g for g in opt.param_groups if any(p is net[0].magnitude for p in g["params"])]
    assert magnitudes[0]["weight_decay"] == 0.0 and magnitudes[0]["rank"] is None


@pytest.mark.parametrize("field,value", [("rank", 0), ("update_proj_gap", 1.5), ("scale", 0.0), ("beta1", 1.0),
                                         ("eps", -1.0), ("eight_bit", "yes"), ("quant_block", 0)])
def test_bad_hyperparameters_name_the_field(field, value):
    with pytest.raises(ValueError, match=rf"^gradnormlorp: .*{field}"):
        get_method("gradnormlorp").make_config({field: value})
