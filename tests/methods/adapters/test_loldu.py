"""LoLDU's mechanism (arXiv:2410.13618): W = P L D U; W' = W_res + σ·P L_r diag(z) U_r with only z (and σ) trainable."""

import pytest
import torch
from torch import nn

from adaptbench.registry import get_method
from methods.adapters.loldu import LoLDULinear, ldu, loldu_delta, loldu_residual


def loldu(**params):
    return get_method("loldu").build(params)


@pytest.mark.parametrize("sigma0", [1.0, 0.25, None])
def test_starts_as_the_base_model(tiny, batch, sigma0):
    base, _ = tiny(seed=0)
    adapted, _ = tiny(seed=0)
    loldu(r=8, sigma0=sigma0).apply(adapted)
    base.eval(), adapted.eval()
    with torch.no_grad():
        torch.testing.assert_close(adapted(**batch).logits, base(**batch).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(5, 5), (6, 4), (3, 7)])
def test_ldu_reconstructs_w_with_unit_triangular_factors(shape):
    torch.manual_seed(0)
    w = torch.randn(*shape, dtype=torch.float64)
    P, L, d, U = ldu(w)
    k = min(shape)
    assert L.shape == (shape[0], k) and d.shape == (k,) and U.shape == (k, shape[1])
    torch.testing.assert_close(P @ L @ torch.diag(d) @ U, w, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.diagonal(L), torch.ones(k, dtype=torch.float64), rtol=0, atol=0)
    torch.testing.assert_close(torch.diagonal(U), torch.ones(k, dtype=torch.float64), rtol=0, atol=1e-15)
    assert torch.count_nonzero(torch.triu(L, diagonal=1)) == 0  # unit lower triangular (trapezoidal)
    assert torch.count_nonzero(torch.tril(U, diagonal=-1)) == 0  # unit upper triangular
    assert torch.equal(P @ P.T, torch.eye(shape[0], dtype=torch.float64)) and set(P.unique().tolist()) == {0.0, 1.0}


def test_ldu_pivots_rows():
    """A leading zero forces a row exchange (P ≠ I): without pivoting there is no LDU of this matrix."""
    w = torch.tensor([[0.0, 1.0], [2.0, 3.0]], dtype=torch.float64)
    P, L, d, U = ldu(w)
    assert not torch.equal(P, torch.eye(2, dtype=torch.float64))
    torch.testing.assert_close(P @ L @ torch.diag(d) @ U, w, rtol=0, atol=0)


def test_residual_is_the_tail_of_the_decomposition():
    """σ0 = 1: W_res = P L[:, r:] D[r:] U[r:] (Fig. 3's residual subspace), and W_res + P L_r D_r U_r = W."""
    torch.manual_seed(0)
    w = torch.randn(6, 6, dtype=torch.float64)
    P, L, d, U = ldu(w)
    r = 2
    res = loldu_residual(w, P, L[:, :r], d[:r], U[:r], 1.0)
    torch.testing.assert_close(res, P @ L[:, r:] @ torch.diag(d[r:]) @ U[r:], rtol=0, atol=1e-12)
    torch.testing.assert_close(res + loldu_delta(P, L[:, :r], d[:r], U[:r], 1.0), w, rtol=0, atol=1e-12)


def test_layer_holds_the_top_r_factors_and_diagonal():
    torch.manual_seed(0)
    base = nn.Linear(12, 10)
    w = base.weight.detach().clone()
    layer = LoLDULinear(base, r=4, sigma0=1.0, train_scale=True)
    P, L, d, U = ldu(w)
    torch.testing.assert_close(layer.loldu_d.double(), d[:4], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(layer.L_r.double(), L[:, :4], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(layer.U_r.double(), U[:4], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(layer.L_r[layer.perm].double(), P @ L[:, :4], rtol=0, atol=1e-6)
    assert layer.loldu_scale.item() == 1.0


def test_forward_is_w_res_plus_scaled_p_l_diag_u():
    torch.manual_seed(0)
    layer = LoLDULinear(nn.Linear(16, 12), r=5, sigma0=1.0, train_scale=True)
    with torch.no_grad():
        layer.loldu_d.add_(torch.randn(5))
        layer.loldu_scale.fill_(0.7)
    P = torch.eye(12)[layer.perm]  # rows of I in perm order: P h = h[perm]
    w = layer.base.weight + 0.7 * P @ layer.L_r @ torch.diag(layer.loldu_d) @ layer.U_r
    x = torch.randn(3, 16)
    torch.testing.assert_close(layer(x), x @ w.T + layer.base.bias, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("train_scale", [True, False])
def test_only_diagonal_scale_and_head_train(tiny, train_scale):
    model, _ = tiny()
    loldu(r=4, train_scale=train_scale).apply(model)
    wrapped = [n for n, m in model.named_modules() if isinstance(m, LoLDULinear)]
    assert wrapped and all(n.endswith(("query", "value")) for n in wrapped)
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    expected = sorted(f"{n}.loldu_d" for n in wrapped) + (sorted(f"{n}.loldu_scale" for n in wrapped) if train_scale else [])
    assert trainable == sorted(expected)


def test_merge_returns_a_plain_linear_with_the_same_outputs():
    torch.manual_seed(0)
    layer = LoLDULinear(nn.Linear(16, 12), r=4, sigma0=0.5, train_scale=True)
    with torch.no_grad():
        layer.loldu_d.add_(torch.randn(4))
        layer.loldu_scale.add_(0.3)
    x = torch.randn(3, 16)
    y = layer(x)
    merged = layer.merged_linear()
    assert type(merged) is nn.Linear
    torch.testing.assert_close(merged(x), y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("train_scale, expected", [(False, 18_432), (True, 18_456)])
def test_roberta_base_count_matches_table_i(train_scale, expected):
    """Table I prints 0.0184M for RoBERTa-base: r = 768 on W_q, W_v of 12 layers = 24·768 diagonal entries."""
    from transformers import AutoModelForSequenceClassification, RobertaConfig

    with torch.device("meta"):  # shapes of roberta-base; torch.linalg.lu has a meta kernel
        model = AutoModelForSequenceClassification.from_config(RobertaConfig(num_labels=2))
        loldu(train_scale=train_scale).apply(model)
    n = sum(p.numel() for name, p in model.named_parameters() if p.requires_grad)
    assert n == expected
    assert round(12 * 2 * 768 / 1e6, 4) == 0.0184


def test_default_initial_scale_is_the_reference_code_alpha_over_rank(tiny):
    """minloldu/loldu.py@9790d90: scaling = lora_alpha / rank, with from_linear's lora_alpha = 1 and
    default_loldu_config's rank = 768, so scaling_factor starts at 1/768 and resmat = W − (1/768)·P L_r D_r U_r."""
    lora_alpha, rank = 1, 768  # the reference's defaults, typed in here rather than read from loldu.py
    assert get_method("loldu").make_config().r == rank
    model, _ = tiny()
    W = model.get_submodule("bert.encoder.layer.0.attention.self.query").weight.detach().double().clone()
    loldu().apply(model)
    layer = model.get_submodule("bert.encoder.layer.0.attention.self.query")
    assert layer.loldu_scale.item() == pytest.approx(lora_alpha / rank, rel=1e-7)
    # tiny-bert is 32 wide, so the top-r part is all of W: P L D U = W and W_res = (1 − 1/768)·W
    torch.testing.assert_close(layer.base.weight.double(), (1 - lora_alpha / rank) * W, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(layer.delta_weight().double(), W * lora_alpha / rank, rtol=1e-4, atol=1e-8)


def test_default_scale_follows_the_configured_rank_and_an_explicit_sigma0_wins():
    model = nn.Sequential(nn.Linear(16, 12))
    loldu(r=8, target_modules=("0",)).apply(model)
    assert model[0].loldu_scale.item() == pytest.approx(1 / 8, rel=1e-7)
    model = nn.Sequential(nn.Linear(16, 12))
    loldu(r=8, sigma0=1.0, target_modules=("0",)).apply(model)  # the paper's α = r (LLaMA2, ViT settings)
    assert model[0].loldu_scale.item() == 1.0


def test_bad_hyperparameters_fail_with_the_field_name():
    with pytest.raises(ValueError, match="loldu: r must be a positive integer"):
        loldu(r=0)
    with pytest.raises(ValueError, match="loldu: sigma0"):
        loldu(sigma0=0.0)
    with pytest.raises(ValueError, match="loldu: sigma0"):
        loldu(sigma0=True)
    with pytest.raises(ValueError, match="loldu: train_scale"):
        loldu(train_scale="yes")


def test_zero_pivot_is_refused():
    with pytest.raises(ValueError, match="zero LU pivot"):
        ldu(torch.zeros(3, 3))
