"""KaSA's mechanism (arXiv:2412.06071) and agreement with PEFT's KaSA variant (LoraConfig(kasa_config=...))."""

import pytest
import torch
from torch import nn

from adaptbench.registry import get_method
from methods.adapters.kasa import (KaSALinear, kasa_delta, knowledge_truncation, orthogonal_regularizer,
                                   singular_value_regularizer)


def kasa(**params):
    return get_method("kasa").build(params)


def fro(m: torch.Tensor) -> torch.Tensor:
    return (m**2).sum().sqrt()


@pytest.mark.parametrize("shape", [(12, 16), (16, 12)])
def test_truncation_removes_exactly_the_r_smallest_triplets(shape):
    torch.manual_seed(0)
    w = torch.randn(*shape)
    U, S, Vh = torch.linalg.svd(w, full_matrices=False)
    dropped = sum(S[i] * torch.outer(U[:, i], Vh[i]) for i in range(9, 12))  # the 3 minor triplets
    w_world = knowledge_truncation(w, 3)
    torch.testing.assert_close(w - w_world, dropped, rtol=0, atol=1e-5)
    s_world = torch.linalg.svdvals(w_world)
    torch.testing.assert_close(s_world[:9], S[:9], rtol=0, atol=1e-5)
    assert s_world[9:].abs().max() < 1e-5


def test_apply_truncates_the_targets_and_the_update_starts_at_zero(tiny, batch):
    reference, _ = tiny(seed=0)
    adapted, _ = tiny(seed=0)
    kasa(r=4).apply(adapted)
    wrapped = {n: m for n, m in adapted.named_modules() if isinstance(m, KaSALinear)}
    assert wrapped and all(n.endswith(("query", "value")) for n in wrapped)
    with torch.no_grad():
        for name, m in wrapped.items():
            assert torch.count_nonzero(kasa_delta(m.lora_A, m.lora_B, m.lora_diag, m.scaling)) == 0
            original = reference.get_submodule(name)
            torch.testing.assert_close(m.base.weight, knowledge_truncation(original.weight, 4))
            original.weight.copy_(m.base.weight)  # reference := the world-knowledge model
    reference.eval(), adapted.eval()
    with torch.no_grad():
        torch.testing.assert_close(adapted(**batch).logits, reference(**batch).logits, rtol=0, atol=1e-6)


def test_regularizers_equal_their_formulas():
    torch.manual_seed(1)
    A, B, s = torch.randn(3, 16), torch.randn(12, 3), torch.randn(3)
    torch.testing.assert_close(singular_value_regularizer(s), s[0] ** 2 + s[1] ** 2 + s[2] ** 2)
    expected = fro(B.T @ B - torch.eye(3)) + fro(A @ A.T - torch.eye(3))
    torch.testing.assert_close(orthogonal_regularizer(A, B), expected)
    q_b, _ = torch.linalg.qr(torch.randn(12, 3))
    q_a, _ = torch.linalg.qr(torch.randn(16, 3))
    assert orthogonal_regularizer(q_a.T, q_b) < 1e-5  # semi-orthogonal ΔU, ΔV: L3 = 0


def test_extra_loss_is_beta_l2_plus_gamma_l3_averaged_over_layers(tiny):
    model, _ = tiny()
    method = kasa(r=4, beta=0.3, gamma=0.7)
    method.apply(model)
    layers = [m for m in model.modules() if isinstance(m, KaSALinear)]
    torch.manual_seed(2)
    with torch.no_grad():
        for m in layers:
            m.lora_B.normal_()
    eye = torch.eye(4)
    l2 = sum((m.lora_diag**2).sum() for m in layers)
    l3 = sum(fro(m.lora_B.T @ m.lora_B - eye) + fro(m.lora_A @ m.lora_A.T - eye) for m in layers)
    torch.testing.assert_close(method.extra_loss(model), (0.3 * l2 + 0.7 * l3) / len(layers))


def test_merge_gives_identical_outputs():
    torch.manual_seed(3)
    layer = KaSALinear(nn.Linear(16, 12), r=3, alpha=6, dropout=0.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(5, 16)
    expected = x @ (layer.base.weight + 2.0 * layer.lora_B @ torch.diag(layer.lora_diag) @ layer.lora_A).T
    torch.testing.assert_close(layer(x), expected + layer.base.bias)
    before = layer(x).detach()
    torch.testing.assert_close(layer.merged_linear()(x), before, rtol=1e-5, atol=1e-6)


def test_r_must_leave_a_triplet_and_bad_hyperparameters_name_the_field(tiny):
    model, _ = tiny()
    with pytest.raises(ValueError, match=r"kasa: r=32 must be < min\(d_out, d_in\)=32"):
        kasa(r=32).apply(model)
    with pytest.raises(ValueError, match="kasa: r must be a positive integer"):
        kasa(r=0)
    with pytest.raises(ValueError, match="kasa: beta"):
        kasa(beta=-1.0)
    with pytest.raises(ValueError, match="kasa: gamma"):
        kasa(gamma=-1.0)


def test_agrees_with_peft_truncation_forward_gradients_and_regularizer(tiny, batch):
    """Same W_world from both; with A, B, s copied from PEFT: same logits, gradients and β·L2 + γ·L3 (PEFT sums
    over layers, we average)."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import KasaConfig

    ours, _ = tiny(seed=0)
    theirs, _ = tiny(seed=0)
    method = kasa(r=4, alpha=8, beta=0.2, gamma=0.05)
    method.apply(ours)
    theirs = get_peft_model(theirs, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["query", "value"],
                                               kasa_config=KasaConfig(beta=0.2, gamma=0.05)))
    peft_layers = {n.removeprefix("base_model.model."): m for n, m in theirs.named_modules()
                   if hasattr(m, "lora_diag") and isinstance(m.lora_A, nn.ModuleDict)}
    our_layers = {n: m for n, m in ours.named_modules() if isinstance(m, KaSALinear)}
    assert peft_layers.keys() == our_layers.keys()
    torch.manual_seed(1)
    with torch.no_grad():
        for name, mine in our_layers.items():
            p = peft_layers[name]
            torch.testing.assert_close(mine.base.weight, p.base_layer.weight, rtol=0, atol=1e-6)
            assert mine.scaling == p.scaling["default"]
            p.lora_B["default"].weight.normal_(std=0.1)  # B = 0 would make the comparison trivial
            mine.lora_A.copy_(p.lora_A["default"].weight)
            mine.lora_B.copy_(p.lora_B["default"].weight)
            mine.lora_diag.copy_(p.lora_diag["default"])
    ours.eval(), theirs.eval()
    out_ours, out_theirs = ours(**batch), theirs(**batch)
    torch.testing.assert_close(out_ours.logits, out_theirs.logits, rtol=1e-5, atol=1e-6)
    (out_ours.loss + method.extra_loss(ours) * len(our_layers)).backward()
    (out_theirs.loss + theirs.base_model._get_kasa_loss()).backward()
    for name, mine in our_layers.items():
        p = peft_layers[name]
        for ours_p, theirs_p in ((mine.lora_A, p.lora_A["default"].weight), (mine.lora_B, p.lora_B["default"].weight),
                                 (mine.lora_diag, p.lora_diag["default"])):
            torch.testing.assert_close(ours_p.grad, theirs_p.grad, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(method.extra_loss(ours) * len(our_layers), theirs.base_model._get_kasa_loss())
