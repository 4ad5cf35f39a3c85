"""SORSA's mechanism (arXiv:2409.00055): SVD split, orthonormal regulariser, what trains."""

import pytest
import torch
from torch import nn

from adaptbench.registry import get_method
from methods.adapters.sorsa import SORSALinear, orthonormal_regularizer, principal_split


def sorsa(**params):
    return get_method("sorsa").build(params)


def fro(m: torch.Tensor) -> torch.Tensor:
    return (m**2).sum().sqrt()


def test_residual_plus_principal_is_w_and_holds_the_top_r_triplets():
    torch.manual_seed(0)
    w = torch.randn(12, 16)
    U_p, S_p, Vh_p, W_r = principal_split(w, 3)
    torch.testing.assert_close(W_r + U_p @ torch.diag(S_p) @ Vh_p, w, rtol=0, atol=1e-5)
    s = torch.linalg.svdvals(w)  # descending
    torch.testing.assert_close(S_p, s[:3])
    # W_r carries exactly the other triplets: its spectrum is σ_4..σ_12 (and three zeros)
    torch.testing.assert_close(torch.linalg.svdvals(W_r)[:9], s[3:], rtol=0, atol=1e-5)
    assert torch.linalg.svdvals(W_r)[9:].abs().max() < 1e-5


def test_default_targets_every_block_linear_and_clamps_r(tiny):
    model, _ = tiny()
    sorsa().apply(model)  # r = 128 > 32 = hidden size: clamped per layer
    wrapped = {n: m for n, m in model.named_modules() if isinstance(m, SORSALinear)}
    suffixes = ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")
    assert len(wrapped) == 2 * 6 and all(n.endswith(suffixes) for n in wrapped)
    assert not any("pooler" in n for n in wrapped)
    for m in wrapped.values():
        assert m.sorsa_S.numel() == min(m.base.in_features, m.base.out_features)
        assert m.base.weight.abs().max() < 1e-4  # full rank adapted: nothing left in W_r


def test_regularizer_equals_its_formula():
    torch.manual_seed(1)
    U, Vh = torch.randn(10, 3), torch.randn(3, 8)
    expected = fro(U.T @ U - torch.eye(3)) + fro(Vh @ Vh.T - torch.eye(3))
    torch.testing.assert_close(orthonormal_regularizer(U, Vh), expected)
    q_u, _ = torch.linalg.qr(torch.randn(10, 3))
    q_v, _ = torch.linalg.qr(torch.randn(8, 3))
    assert orthonormal_regularizer(q_u, q_v.T) < 1e-5


def test_regularizer_is_zero_at_init_and_the_loss_is_the_mean_over_matrices(tiny):
    model, _ = tiny()
    method = sorsa(r=4, gamma=0.5)
    method.apply(model)
    layers = [m for m in model.modules() if isinstance(m, SORSALinear)]
    assert method.extra_loss(model) < 1e-5
    torch.manual_seed(2)
    with torch.no_grad():
        for m in layers:
            m.sorsa_U.add_(0.1 * torch.randn_like(m.sorsa_U))
            m.sorsa_Vh.add_(0.1 * torch.randn_like(m.sorsa_Vh))
    eye = torch.eye(4)
    terms = [fro(m.sorsa_U.T @ m.sorsa_U - eye) + fro(m.sorsa_Vh @ m.sorsa_Vh.T - eye) for m in layers]
    expected = 0.5 * sum(terms) / (2 * len(layers))  # official calc_ortho: sum / number of U and V matrices
    torch.testing.assert_close(method.extra_loss(model), expected)
    assert sorsa(gamma=0.0).extra_loss(model) is None


def test_forward_is_w_r_plus_principal_after_training_moves_the_factors():
    torch.manual_seed(3)
    layer = SORSALinear(nn.Linear(16, 12), r=5)
    with torch.no_grad():
        for p in (layer.sorsa_U, layer.sorsa_S, layer.sorsa_Vh):
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(4, 16)
    w = layer.base.weight + layer.sorsa_U @ torch.diag(layer.sorsa_S) @ layer.sorsa_Vh
    torch.testing.assert_close(layer(x), x @ w.T + layer.base.bias)
    before = layer(x).detach()
    merged = layer.merged_linear()
    torch.testing.assert_close(merged(x), before, rtol=1e-5, atol=1e-6)


def test_gradients_reach_u_s_v_only_and_the_regulariser_never_touches_s(tiny, batch):
    model, _ = tiny()
    method = sorsa(r=4)
    method.apply(model)
    model(**batch).loss.backward()
    for name, p in model.named_parameters():
        if name.startswith("classifier."):
            continue
        assert (p.grad is not None) == name.endswith(("sorsa_U", "sorsa_S", "sorsa_Vh")), name
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SORSALinear):
                m.sorsa_U.mul_(1.5)  # off the Stiefel manifold so the regulariser has a gradient
    method.extra_loss(model).backward()
    for name, p in model.named_parameters():
        if name.endswith("sorsa_U"):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        elif not name.endswith("sorsa_Vh"):  # Vh sits at the norm's kink (V_pᵀV_p ≈ I), its subgradient is arbitrary
            assert p.grad is None, name


def test_bad_hyperparameters_fail_with_the_field_name():
    with pytest.raises(ValueError, match="sorsa: r must be a positive integer"):
        sorsa(r=0)
    with pytest.raises(ValueError, match="sorsa: gamma"):
        sorsa(gamma=-1.0)
