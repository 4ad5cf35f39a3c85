"""SLTrain (arXiv:2406.02214): W = (α/r)·B·A + S with S on a random support fixed once (from a seed) and
only S's values, B and A trained; the parameter count is r·(d_out + d_in) + ⌊δ·d_out·d_in⌋ (+ bias)."""

import math

import pytest
import torch

from adaptbench import tasks
from adaptbench.protocol import optimizer_state_bytes
from adaptbench.registry import get_method
from adaptbench.build import build_model, trainable_state
from methods.optimizers.sltrain import SLTrainLinear, sltrain_parameter_count

LR = 1e-2


def method(**overrides):
    return get_method("sltrain").build({"target_modules": ("0", "2"), "rank": 2, "alpha": 4.0, "delta": 0.2,
                                        **overrides})


def toy(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(10, 12), torch.nn.Tanh(), torch.nn.Linear(12, 3))


def dense_by_hand(layer):
    """(α/r)·B·A plus S written entry by entry at (index // d_in, index % d_in)."""
    d_out, d_in = layer.lora_B.shape[0], layer.lora_A.shape[1]
    s = torch.zeros(d_out, d_in, dtype=layer.lora_A.dtype)
    for flat, value in zip(layer.sparse_index.tolist(), layer.sparse_value.detach()):
        s[flat // d_in, flat % d_in] = value
    return layer.scaling * layer.lora_B.detach() @ layer.lora_A.detach() + s


def train(net, steps=4, wd=0.0):
    opt = method().build(list(net.named_parameters()), LR, wd)
    for t in range(steps):
        net(torch.randn(6, 10, generator=torch.Generator().manual_seed(t))).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
    return opt


def test_init_and_forward_follow_the_parameterisation():
    net = method().prepare_model(toy())
    layer = net[0]
    assert isinstance(layer, SLTrainLinear)
    assert "weight" not in dict(layer.named_parameters())  # the dense W is not stored
    assert torch.equal(layer.lora_B, torch.zeros(12, 2))  # B = 0: W = S at init
    bound = 1 / math.sqrt(10)  # Kaiming-uniform (a = √5) and the values: both U(±1/√d_in)
    assert layer.lora_A.abs().max() <= bound and layer.sparse_value.abs().max() <= bound
    assert layer.scaling == 4.0 / 2
    x = torch.randn(5, 10)
    with torch.no_grad():
        layer.lora_B.normal_()
    torch.testing.assert_close(layer(x), x @ dense_by_hand(layer).T + layer.bias)



def test_the_pretrained_bias_is_kept_not_reinitialised():
    base = toy()
    biases = [base[i].bias for i in (0, 2)]
    values = [b.detach().clone() for b in biases]
    net = method().prepare_model(base)
    for i, bias, value in zip((0, 2), biases, values):
        assert net[i].bias is bias and torch.equal(net[i].bias, value)  # documented deviation (sltrain.py)


def test_support_is_fixed_and_only_values_and_factors_train():
    net = method().prepare_model(toy())
    supports = [m.sparse_index.clone() for m in (net[0], net[2])]
    assert [s.numel() for s in supports] == [int(0.2 * 12 * 10), int(0.2 * 3 * 12)]
    assert all(torch.equal(s, s.unique()) for s in supports)  # distinct, sorted
    assert {n for n, p in net.named_parameters() if p.requires_grad} == {
        f"{i}.{k}" for i in (0, 2) for k in ("lora_A", "lora_B", "sparse_value", "bias")}
    assert "0.sparse_index" in dict(net.named_buffers())  # a buffer: never trained
    train(net, steps=5, wd=0.1)
    for m, s in zip((net[0], net[2]), supports):
        assert torch.equal(m.sparse_index, s)
        low = m.scaling * m.lora_B.detach() @ m.lora_A.detach()
        off_support = torch.ones(low.numel(), dtype=torch.bool)
        off_support[s] = False
        torch.testing.assert_close((m.weight().detach() - low).flatten()[off_support],
                                   torch.zeros(int(off_support.sum())))  # S is zero off its support


def test_parameter_count_equals_the_formula():
    net = method().prepare_model(toy())
    for m, (d_out, d_in) in zip((net[0], net[2]), ((12, 10), (3, 12))):
        r = min(2, d_out, d_in)
        assert sum(p.numel() for p in m.parameters()) == sltrain_parameter_count(d_out, d_in, r, 0.2, True)
        formula = r * (d_out + d_in) + int(0.2 * d_out * d_in) + d_out
        assert sltrain_parameter_count(d_out, d_in, r, 0.2, True) == formula


def test_support_comes_from_the_seed_and_layer_name():
    def supports(seed):
        torch.manual_seed(seed)
        net = method().prepare_model(toy(seed))
        torch.rand(100)  # global RNG state left over must not matter
        return net[0].sparse_index

    torch.manual_seed(0)
    a = method().prepare_model(toy(0))
    torch.manual_seed(0)
    torch.rand(1000)  # different leftover RNG state, same seed
    torch.manual_seed(0)
    b = method().prepare_model(toy(0))
    assert torch.equal(a[0].sparse_index, b[0].sparse_index) and torch.equal(a[0].lora_A, b[0].lora_A)
    assert not torch.equal(supports(0), supports(1))
    assert not torch.equal(a[0].sparse_index[:7], a[2].sparse_index[:7])  # each layer has its own support


def test_evaluator_rebuild_reproduces_the_trained_model(batch):
    spec, opt_method = tasks.get_task("syn_sentiment"), get_method("sltrain").build()
    _, net, _ = build_model("full", {}, "tiny-bert", spec, 0, opt_method)
    layers = [m for m in net.modules() if isinstance(m, SLTrainLinear)]
    assert len(layers) == 2 * 6 and all(m.rank == 32 for m in layers)  # r = 128 capped at 32 (tiny-bert)
    opt = opt_method.build([(n, p) for n, p in net.named_parameters() if p.requires_grad], LR, 0.0)
    net.train()
    for _ in range(2):
        net(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
    _, rebuilt, _ = build_model("full", {}, "tiny-bert", spec, 0, get_method("sltrain").build())
    rebuilt.load_state_dict(trainable_state(net), strict=False)
    net.eval(), rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(**batch).logits, net(**batch).logits)


def test_state_bytes_against_adamw_on_a_sample_shape():
    """(256, 64) layer, r = 8, δ = 0.03: AdamW moments on B, A and the 491 values vs on the dense W."""
    torch.manual_seed(3)
    m = method(target_modules=("0",), rank=8, delta=0.03)
    net = m.prepare_model(torch.nn.Sequential(torch.nn.Linear(64, 256, bias=False)))
    opt = m.build(list(net.named_parameters()), LR, 0.0)
    net(torch.randn(4, 64)).sum().backward()
    opt.step()
    nnz = int(0.03 * 256 * 64)
    assert optimizer_state_bytes(opt) == 2 * 4 * (8 * (256 + 64) + nnz) + 3 * 4  # + three step tensors
    dense = torch.nn.Parameter(torch.randn(256, 64))
    adamw = torch.optim.AdamW([dense], lr=LR)
    dense.grad = torch.randn(256, 64)
    adamw.step()
    assert optimizer_state_bytes(opt) / optimizer_state_bytes(adamw) == pytest.approx(24420 / 131076)  # ≈ 0.19


def test_sparse_values_are_decayed_like_the_factors():
    net = method().prepare_model(toy())
    opt = method().build(list(net.named_parameters()), LR, 0.1)
    decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0.1 for p in g["params"]}
    assert {id(net[0].sparse_value), id(net[0].lora_A), id(net[0].lora_B)} <= decay
    assert id(net[0].bias) not in decay


@pytest.mark.parametrize("field,value", [("rank", 0), ("alpha", 0.0), ("delta", 1.0), ("delta", 0.0)])
def test_bad_hyperparameters_name_the_field(field, value):
    with pytest.raises(ValueError, match=rf"^sltrain: {field} must be"):
        get_method("sltrain").make_config({field: value})
