"""PiSSA's mechanism (arXiv:2404.02948) and agreement with PEFT's init_lora_weights="pissa"."""

import pytest
import torch
from torch import nn

from adaptbench.registry import get_method
from methods.adapters.lora import LoRALinear


def pissa(**params):
    return get_method("pissa").build(params)


def one_linear(out_features=16, in_features=24, spectrum=None, seed=0):
    """nn.Sequential holding one Linear; `spectrum` fixes its singular values (descending)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(in_features, out_features))
    if spectrum is not None:
        with torch.no_grad():
            U, _ = torch.linalg.qr(torch.randn(out_features, len(spectrum)))
            V, _ = torch.linalg.qr(torch.randn(in_features, len(spectrum)))
            model[0].weight.copy_(U @ torch.diag(torch.as_tensor(spectrum, dtype=torch.float32)) @ V.T)
    return model


@pytest.mark.parametrize("r, alpha", [(4, 4.0), (4, 16.0)])
def test_factors_are_the_top_r_singular_triplets(r, alpha):
    model = one_linear()
    W = model[0].weight.detach().clone()
    U, S, Vh = torch.linalg.svd(W)
    pissa(r=r, alpha=alpha, target_modules=("0",)).apply(model)
    layer = model[0]
    A, B, s = layer.lora_A.detach(), layer.lora_B.detach(), alpha / r
    # s·B A is the best rank-r approximation; A's rows and B's columns are orthogonal with norms² S_r / s
    torch.testing.assert_close(s * B @ A, U[:, :r] @ torch.diag(S[:r]) @ Vh[:r], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(A @ A.T, torch.diag(S[:r]) / s, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(B.T @ B, torch.diag(S[:r]) / s, atol=1e-5, rtol=1e-5)
    # the frozen residual holds exactly the other singular values, and residual + adapter == W
    torch.testing.assert_close(torch.linalg.svdvals(layer.base.weight)[: len(S) - r], S[r:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.base.weight + s * B @ A, W, atol=1e-6, rtol=1e-5)


def test_fast_svd_reconstruction_is_close_to_exact():
    """Fast-SVD section: a few subspace iterations recover the principal part of a decaying spectrum."""
    spectrum = [2.0 ** -i for i in range(16)]
    errors = {}
    for niter in (None, 4):
        model = one_linear(48, 64, spectrum)
        W = model[0].weight.detach().clone()
        torch.manual_seed(0)
        pissa(r=4, alpha=4.0, niter=niter, target_modules=("0",)).apply(model)
        layer = model[0]
        errors[niter] = torch.linalg.norm(W - layer.lora_B @ layer.lora_A).item()  # = ‖W^res‖_F
        torch.testing.assert_close(layer.base.weight + layer.lora_B @ layer.lora_A, W, atol=1e-6, rtol=1e-5)
    optimum = sum(s * s for s in spectrum[4:]) ** 0.5  # Eckart–Young
    assert errors[None] == pytest.approx(optimum, rel=1e-4)
    assert optimum * (1 - 1e-4) <= errors[4] <= optimum * (1 + 1e-3)


def test_only_a_b_and_head_train(tiny, batch):
    model, _ = tiny(seed=0)
    pissa().apply(model)
    model.classifier.requires_grad_(True)  # the trainer does this after apply
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith((".lora_A", ".lora_B")) or n.startswith("classifier.") for n in trainable)
    assert sum(n.endswith(".lora_A") for n in trainable) == 2 * 3  # 2 layers × (query, key, value)
    model(**batch).loss.backward()
    assert {n for n, p in model.named_parameters() if p.grad is not None} == trainable


def test_merge_gives_plain_weights_and_identical_outputs(tiny, batch):
    model, _ = tiny(seed=0)
    method = pissa()
    method.apply(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.add_(0.05 * torch.randn_like(m.lora_B))  # a trained-looking update
    model.eval()
    with torch.no_grad():
        before = model(**batch).logits
        merged = method.merge(model)
        torch.testing.assert_close(merged(**batch).logits, before, rtol=1e-5, atol=1e-5)
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())


def test_roberta_base_count_is_r_times_in_plus_out_per_target():
    from transformers import AutoModelForSequenceClassification, RobertaConfig

    with torch.device("meta"):  # the shapes of roberta-base, no weights, no download
        model = AutoModelForSequenceClassification.from_config(RobertaConfig(num_labels=2))
        pissa().apply(model)
    n = sum(p.numel() for name, p in model.named_parameters() if p.requires_grad)
    assert n == 12 * 3 * 8 * (768 + 768) == 442_368


def test_bad_hyperparameters_fail_with_the_field_name():
    with pytest.raises(ValueError, match="pissa: r must be a positive integer"):
        pissa(r=0)
    with pytest.raises(ValueError, match="pissa: alpha"):
        pissa(alpha=0)
    with pytest.raises(ValueError, match="pissa: niter"):
        pissa(niter=-1)
    with pytest.raises(ValueError, match="pissa: r = 64 exceeds"):
        pissa(r=64, target_modules=("0",)).apply(one_linear())


def peft_layers(model):
    return {n.removeprefix("base_model.model."): m for n, m in model.named_modules()
            if hasattr(m, "lora_A") and isinstance(m.lora_A, nn.ModuleDict)}


def test_agrees_with_peft_exact_svd(tiny, batch):
    """Same residual weight, same s·B A, same factors up to the sign of each singular pair, same logits.
    α = 2r, so PEFT's S/s rescaling is exercised too."""
    from peft import LoraConfig, get_peft_model

    target = ["query", "key", "value"]
    ours, _ = tiny(seed=0)
    theirs, _ = tiny(seed=0)
    pissa(r=4, alpha=8.0, target_modules=tuple(target)).apply(ours)
    theirs = get_peft_model(theirs, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=target,
                                               init_lora_weights="pissa"))
    mine = {n: m for n, m in ours.named_modules() if isinstance(m, LoRALinear)}
    peft = peft_layers(theirs)
    assert mine.keys() == peft.keys() and len(mine) == 6
    for name, m in mine.items():
        p = peft[name]
        a, b = p.lora_A["default"].weight, p.lora_B["default"].weight
        assert m.scaling == p.scaling["default"] == 2.0
        torch.testing.assert_close(m.base.weight, p.base_layer.weight, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(m.scaling * m.lora_B @ m.lora_A, p.scaling["default"] * b @ a,
                                   atol=1e-6, rtol=1e-5)
        sign = torch.sign((m.lora_A * a).sum(dim=1))  # SVD determines each pair (u_i, v_i) up to ±
        torch.testing.assert_close(m.lora_A, sign[:, None] * a, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(m.lora_B, b * sign[None, :], atol=1e-5, rtol=1e-4)
    ours.eval(), theirs.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch).logits, theirs(**batch).logits, rtol=1e-5, atol=1e-6)


def test_agrees_with_peft_fast_svd():
    """pissa_niter_4 vs niter=4: both randomized, so compared where both converge (a decaying spectrum)."""
    from peft import LoraConfig, get_peft_model

    spectrum = [2.0 ** -i for i in range(16)]
    ours, theirs = one_linear(48, 64, spectrum), one_linear(48, 64, spectrum)
    torch.manual_seed(1)
    pissa(r=4, alpha=4.0, niter=4, target_modules=("0",)).apply(ours)
    torch.manual_seed(2)
    theirs = get_peft_model(theirs, LoraConfig(r=4, lora_alpha=4, target_modules=["0"],
                                               init_lora_weights="pissa_niter_4"))
    m, p = ours[0], theirs.base_model.model[0]
    torch.testing.assert_close(m.base.weight, p.base_layer.weight, atol=1e-4, rtol=0)
    torch.testing.assert_close(m.lora_B @ m.lora_A, p.lora_B["default"].weight @ p.lora_A["default"].weight,
                               atol=1e-4, rtol=0)
    x = torch.randn(5, 64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), p(x), atol=1e-5, rtol=1e-5)
