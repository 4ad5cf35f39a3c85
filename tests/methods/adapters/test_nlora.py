"""SLoRA, NLoRA and IntTune (arXiv:2502.14482): Nyström construction, output at init, which tensors train,
merge, trainable-parameter counts."""

import numpy as np
import pytest
import torch
from torch import nn

from adaptbench.registry import get_method
from methods.adapters._nlora_math import ThreeFactorLinear

VARIANTS = ("slora", "nlora", "inttune")


def build(name, **params):
    return get_method(name).build(params)


def one_linear(out_features=12, in_features=10, weight=None, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(in_features, out_features))
    if weight is not None:
        with torch.no_grad():
            model[0].weight.copy_(weight)
    return model


def adapter_product(layer):
    return (layer.scaling * layer.lora_B @ layer.lora_N @ layer.lora_A).detach().double()


@pytest.mark.parametrize("alpha", [3.0, 12.0])
def test_first_r_nystrom_is_c_u_inverse_r(alpha):
    """Nyström with the first r columns/rows: s·B N A = W[:, :r] W[:r, :r]⁻¹ W[:r, :], computed here in float64."""
    r = 3
    model = one_linear()
    W = model[0].weight.detach().double().numpy()
    build("nlora", r=r, alpha=alpha, target_modules=("0",)).apply(model)
    layer = model[0]
    expected = W[:, :r] @ np.linalg.inv(W[:r, :r]) @ W[:r, :]
    np.testing.assert_allclose(adapter_product(layer).numpy(), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.lora_B.detach().numpy(), W[:, :r], rtol=0, atol=1e-7)  # B = C
    np.testing.assert_allclose(layer.lora_A.detach().numpy(), W[:r, :], rtol=0, atol=1e-7)  # A = R
    np.testing.assert_allclose(layer.lora_N.detach().numpy(), np.linalg.inv(W[:r, :r]) / (alpha / r),
                               rtol=1e-4, atol=1e-5)  # N = U⁺ / s


def test_gaussian_nystrom_is_w_omega_pinv_psi_w():
    """Generalized Nyström with Gaussian test matrices (drawn Ψ then Ω from the global RNG):
    s·B N A = (W Ω)(Ψᵀ W Ω)⁺(Ψᵀ W)."""
    r = 3
    model = one_linear()
    W = model[0].weight.detach().double()
    torch.manual_seed(5)
    psi, omega = torch.randn(12, r).double(), torch.randn(10, r).double()
    torch.manual_seed(5)
    build("nlora", r=r, alpha=float(r), sketch="gaussian", target_modules=("0",)).apply(model)
    expected = (W @ omega) @ torch.linalg.pinv(psi.T @ W @ omega) @ (psi.T @ W)
    torch.testing.assert_close(adapter_product(model[0]), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sketch", ["first_r", "gaussian"])
def test_exact_rank_r_weight_is_reproduced(sketch):
    """W of rank exactly r: the Nyström approximation is W itself; with residual=True the frozen part is ≈ 0."""
    r = 4
    torch.manual_seed(1)
    W = torch.randn(12, r) @ torch.randn(r, 10)
    for residual in (False, True):
        model = one_linear(weight=W)
        build("nlora", r=r, alpha=8.0, sketch=sketch, residual=residual, target_modules=("0",)).apply(model)
        torch.testing.assert_close(adapter_product(model[0]).float(), W, rtol=1e-4, atol=1e-4)
        frozen = model[0].base.weight
        torch.testing.assert_close(frozen, torch.zeros_like(W) if residual else W, rtol=0, atol=1e-4)


def test_slora_init_is_kaiming_kaiming_zero_and_starts_as_the_base(tiny, batch):
    model, _ = tiny(seed=0)
    base, _ = tiny(seed=0)
    build("slora").apply(model)
    layers = [m for m in model.modules() if isinstance(m, ThreeFactorLinear)]
    assert len(layers) == 2 * 6  # 2 layers × (query, key, value, attention.output, intermediate, output)
    for m in layers:
        assert torch.count_nonzero(m.lora_B) == 0
        assert torch.count_nonzero(m.lora_A) == m.lora_A.numel() and torch.count_nonzero(m.lora_N) == m.lora_N.numel()
        bound = 1 / m.lora_A.shape[1] ** 0.5  # kaiming_uniform(a=√5) bound = 1/√fan_in
        assert m.lora_A.abs().max() <= bound and m.lora_N.abs().max() <= 1 / m.r ** 0.5
    model.eval(), base.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, base(**batch).logits, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["nlora", "inttune"])
def test_nystrom_variants_start_at_w_plus_nystrom_part(name, tiny, batch):
    """Released code keeps W: each layer computes x (W + C U⁺ R)ᵀ + b, so the model differs from the base;
    residual=True restores the base model exactly."""
    model, _ = tiny(seed=0)
    base, _ = tiny(seed=0)
    build(name).apply(model)
    layer = model.bert.encoder.layer[0].attention.self.query
    W = base.bert.encoder.layer[0].attention.self.query.weight.detach()
    b = base.bert.encoder.layer[0].attention.self.query.bias.detach()
    r = layer.r
    nystrom = W[:, :r] @ torch.linalg.pinv(W[:r, :r]) @ W[:r, :]
    x = torch.randn(5, W.shape[1])
    with torch.no_grad():
        torch.testing.assert_close(layer(x), x @ (W + nystrom).T + b, rtol=1e-4, atol=1e-4)
    model.eval(), base.eval()
    with torch.no_grad():
        assert not torch.allclose(model(**batch).logits, base(**batch).logits, atol=1e-3)
    assert get_method(name).cls.IDENTITY_AT_INIT is False

    residual_model, _ = tiny(seed=0)
    build(name, residual=True).apply(residual_model)
    residual_model.eval()
    with torch.no_grad():
        torch.testing.assert_close(residual_model(**batch).logits, base(**batch).logits, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name, trained", [("slora", {"lora_A", "lora_N", "lora_B"}),
                                           ("nlora", {"lora_A", "lora_N", "lora_B"}),
                                           ("inttune", {"lora_N"})])
def test_exactly_the_intended_tensors_get_gradients(name, trained, tiny, batch):
    model, _ = tiny(seed=0)
    build(name).apply(model)
    model.classifier.requires_grad_(True)  # the trainer does this after apply
    expected = {n for n, _ in model.named_parameters()
                if n.startswith("classifier.") or n.rsplit(".", 1)[-1] in trained}
    assert sum(n.endswith(".lora_N") for n in expected) == 12
    assert {n for n, p in model.named_parameters() if p.requires_grad} == expected
    model(**batch).loss.backward()
    assert {n for n, p in model.named_parameters() if p.grad is not None} == expected
    if name != "slora":  # Nyström init: every trained factor gets a non-zero gradient at step 0
        assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n in expected)


@pytest.mark.parametrize("name", VARIANTS)
def test_merge_gives_plain_weights_and_identical_outputs(name, tiny, batch):
    model, _ = tiny(seed=0)
    method = build(name)
    method.apply(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ThreeFactorLinear):
                for p in (m.lora_A, m.lora_N, m.lora_B):
                    p.add_(0.05 * torch.randn_like(p))  # a trained-looking update
    model.eval()
    with torch.no_grad():
        before = model(**batch).logits
        merged = method.merge(model)
        torch.testing.assert_close(merged(**batch).logits, before, rtol=1e-5, atol=1e-5)
    assert not any(isinstance(m, ThreeFactorLinear) for m in merged.modules())


@pytest.mark.parametrize("name, per_layer", [("slora", 8 * (768 + 768) + 8 * 8),
                                             ("nlora", 8 * (768 + 768) + 8 * 8),
                                             ("inttune", 8 * 8)])
def test_trainable_count_on_a_roberta_base_layer(name, per_layer):
    """768 × 768 (RoBERTa-base W_q), r = 8: r·(in + out) + r² for SLoRA/NLoRA, r² for IntTune."""
    model = one_linear(768, 768)
    build(name, target_modules=("0",)).apply(model)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == per_layer


def test_abstract_extra_parameters_over_lora_on_llama2_7b():
    """Abstract: 3.67M additional parameters = the N matrices, r = 128 on 7 matrices × 32 layers (run_nlora.sh)."""
    shapes = [(4096, 4096)] * 4 + [(11008, 4096), (11008, 4096), (4096, 11008)]  # q k v o gate up down (out, in)
    with torch.device("meta"):
        block = nn.Sequential(*[nn.Linear(i, o, bias=False) for o, i in shapes])
        build("slora", r=128, alpha=128.0, target_modules=tuple(str(k) for k in range(7))).apply(block)
    extra = sum(p.numel() for n, p in block.named_parameters() if n.endswith("lora_N"))
    lora = sum(p.numel() for n, p in block.named_parameters() if n.endswith(("lora_A", "lora_B")))
    assert lora == 128 * sum(o + i for o, i in shapes)
    assert 32 * extra == 3_670_016  # "3.67M"


def test_bad_hyperparameters_fail_with_the_field_name():
    with pytest.raises(ValueError, match="slora: r must be a positive integer"):
        build("slora", r=0)
    with pytest.raises(ValueError, match="nlora: alpha"):
        build("nlora", alpha=0)
    with pytest.raises(ValueError, match="inttune: sketch must be one of"):
        build("inttune", sketch="svd")
    with pytest.raises(ValueError, match="nlora: residual"):
        build("nlora", residual="yes")
    with pytest.raises(ValueError, match="nlora: r = 64 exceeds"):
        build("nlora", r=64, target_modules=("0",)).apply(one_linear())
