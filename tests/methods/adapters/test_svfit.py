"""SVFit's mechanism (arXiv:2409.05926): W = W_e + U_r diag(σ) V_r^T with only the top-r singular values σ trainable."""

import pytest
import torch
from torch import nn

from adaptbench.registry import get_method
from methods.adapters.svfit import SVFitLinear, svfit_low_rank, top_r_svd


def svfit(**params):
    return get_method("svfit").build(params)


def test_trainable_vector_is_the_top_r_singular_values_and_residual_is_the_tail():
    torch.manual_seed(0)
    base = nn.Linear(20, 12)
    w = base.weight.detach().clone()
    layer = SVFitLinear(base, r=5)
    full = torch.linalg.svdvals(w.double())
    torch.testing.assert_close(layer.svfit_sigma.double(), full[:5], rtol=1e-6, atol=1e-6)
    assert torch.all(layer.svfit_sigma[:-1] >= layer.svfit_sigma[1:])  # descending: the *top* r
    # W_e keeps exactly the singular values r+1 … 12, and W_e + U_r diag(σ_r) V_r^T rebuilds W
    torch.testing.assert_close(torch.linalg.svdvals(layer.base.weight.double())[:7], full[5:], rtol=1e-5, atol=1e-5)
    rebuilt = layer.base.weight + svfit_low_rank(layer.U_r, layer.svfit_sigma, layer.Vh_r)
    torch.testing.assert_close(rebuilt, w, rtol=1e-5, atol=1e-6)
    # singular vectors are orthonormal
    torch.testing.assert_close(layer.U_r.T @ layer.U_r, torch.eye(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(layer.Vh_r @ layer.Vh_r.T, torch.eye(5), atol=1e-5, rtol=0)


def test_only_the_singular_values_and_head_train_on_query_and_value(tiny, batch):
    model, _ = tiny()
    svfit(r=4).apply(model)
    wrapped = [n for n, m in model.named_modules() if isinstance(m, SVFitLinear)]
    assert wrapped and all(n.endswith(("query", "value")) for n in wrapped)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(".svfit_sigma") for n in trainable)
    assert len(trainable) == len(wrapped)
    assert all(model.get_submodule(n).svfit_sigma.numel() == 4 for n in wrapped)


def test_forward_scales_the_frozen_subspaces():
    torch.manual_seed(0)
    layer = SVFitLinear(nn.Linear(16, 10), r=3)
    with torch.no_grad():
        layer.svfit_sigma.mul_(torch.tensor([2.0, 0.5, -1.0]))
    x = torch.randn(4, 16)
    w = layer.base.weight + layer.U_r @ torch.diag(layer.svfit_sigma) @ layer.Vh_r
    torch.testing.assert_close(layer(x), x @ w.T + layer.base.bias)


def test_rank_is_clipped_to_the_matrix():
    layer = SVFitLinear(nn.Linear(6, 9), r=768)
    assert layer.r == 6 and layer.svfit_sigma.shape == (6,)
    assert layer.base.weight.abs().max() < 1e-5  # full rank: nothing left in W_e


def test_merge_returns_a_plain_linear_with_the_same_outputs():
    torch.manual_seed(0)
    layer = SVFitLinear(nn.Linear(16, 12), r=4)
    with torch.no_grad():
        layer.svfit_sigma.add_(torch.randn(4))
    x = torch.randn(3, 16)
    y = layer(x)
    merged = layer.merged_linear()
    assert type(merged) is nn.Linear
    torch.testing.assert_close(merged(x), y, rtol=1e-5, atol=1e-6)


def test_top_r_svd_matches_torch():
    w = torch.randn(7, 5, dtype=torch.float64)
    U_r, s_r, Vh_r = top_r_svd(w, 5)
    torch.testing.assert_close((U_r * s_r) @ Vh_r, w)


def test_roberta_base_count_is_sixteen_times_below_lora():
    """Abstract: 16x fewer trainable parameters than LoRA; LoRA r = 8 on W_q, W_v of RoBERTa-base = 294,912."""
    from transformers import AutoModelForSequenceClassification, RobertaConfig

    with torch.device("meta"):  # shapes of roberta-base; torch.linalg.svd has a meta kernel
        model = AutoModelForSequenceClassification.from_config(RobertaConfig(num_labels=2))
        svfit().apply(model)
    n = sum(p.numel() for name, p in model.named_parameters() if name.endswith("svfit_sigma"))
    assert n == 12 * 2 * 768 == 294_912 // 16 == 18_432


def test_bad_hyperparameters_fail_with_the_field_name():
    with pytest.raises(ValueError, match="svfit: r must be a positive integer"):
        svfit(r=0)
    with pytest.raises(ValueError, match="svfit: target_modules"):
        svfit(target_modules=())
