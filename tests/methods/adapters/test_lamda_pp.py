"""LaMDA++ (arXiv:2406.12832): LaMDA with per-layer ranks from a normalized spectrum (energy) score under a budget."""

import pytest
import torch
from torch import nn

from adaptbench.registry import get_method
from methods.adapters._lamda_math import LaMDALinear
from methods.adapters.lamda_pp import allocate_ranks, energy_score


def lamda_pp(**params):
    return get_method("lamda_pp").build(params)


def with_spectrum(linear: nn.Linear, spectrum, seed):
    torch.manual_seed(seed)
    n = len(spectrum)
    U, _ = torch.linalg.qr(torch.randn(linear.out_features, n))
    V, _ = torch.linalg.qr(torch.randn(linear.in_features, n))
    with torch.no_grad():
        linear.weight.copy_(U @ torch.diag(torch.as_tensor(spectrum, dtype=torch.float32)) @ V.T)


def four_layers():
    """Layers whose top-4 energy shares are ordered 0 < 1 < 2 < 3 (nearly flat spectrum → steeply decaying one)."""
    model = nn.Sequential(*[nn.Linear(16, 16) for _ in range(4)])
    for i, decay in enumerate((0.95, 0.85, 0.7, 0.4)):
        with_spectrum(model[i], [decay ** j for j in range(16)], seed=i)
    return model


def test_energy_score_is_the_top_r_share_of_squared_singular_values():
    s = torch.tensor([3.0, 2.0, 1.0, 1.0])
    assert energy_score(s, 2) == pytest.approx((9 + 4) / (9 + 4 + 1 + 1))
    assert energy_score(s, 4) == pytest.approx(1.0)


def test_allocation_is_proportional_sums_to_the_budget_and_respects_bounds():
    assert allocate_ranks([1.0, 1.0, 2.0], 8, [16] * 3, 1) == [2, 2, 4]
    ranks = allocate_ranks([0.1, 0.2, 0.3, 0.4], 10, [16] * 4, 1)
    assert ranks == [1, 2, 3, 4] and sum(ranks) == 10
    # largest remainder: shares 2.5, 2.5, 5 of 10 → floors 2, 2, 5 and the spare rank goes to a .5 remainder
    assert sorted(allocate_ranks([1.0, 1.0, 2.0], 10, [16] * 3, 1)) == [2, 3, 5]
    ranks = allocate_ranks([0.0, 0.0, 1.0], 6, [3, 3, 3], 1)  # ideal 0, 0, 6: r_min floor, cap 3, spare to a tie
    assert ranks[2] == 3 and sorted(ranks) == [1, 2, 3]
    with pytest.raises(ValueError, match=r"lamda_pp: rank_budget = 20 must lie in \[3, 9\]"):
        allocate_ranks([1.0, 1.0, 1.0], 20, [3, 3, 3], 1)


def test_ranks_sum_to_the_budget_and_follow_the_spectrum():
    model = four_layers()
    method = lamda_pp(r=4, target_modules=("0", "1", "2", "3"))
    ranks = method.ranks(model)
    scores = [energy_score(torch.linalg.svdvals(model[i].weight.detach()), 4) for i in range(4)]
    assert scores == sorted(scores)  # the construction: more energy in the top 4 from layer 0 to layer 3
    assert sum(ranks.values()) == 4 * 4  # default budget: r × number of layers
    assert [ranks[str(i)] for i in range(4)] == sorted(ranks.values()) and ranks["3"] > ranks["0"]
    method.apply(model)
    assert [model[i].r for i in range(4)] == [ranks[str(i)] for i in range(4)]
    assert sum(p.numel() for n, p in model.named_parameters() if n.endswith("lamda_S")) == sum(
        r * r for r in ranks.values())


def test_each_layer_is_a_lamda_path_of_its_rank_and_the_model_starts_as_the_base():
    model, reference = four_layers(), four_layers()
    lamda_pp(r=4, alpha=8.0, rank_budget=12, target_modules=("0", "1", "2", "3")).apply(model)
    x = torch.randn(5, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)
    for i in range(4):
        m, W = model[i], reference[i].weight
        r = m.r
        U, S, Vh = torch.linalg.svd(W)
        assert m.scaling == 8.0 / r  # α / r_l
        torch.testing.assert_close(m.delta_weight(), U[:, :r] @ torch.diag(S[:r]) @ Vh[:r], atol=1e-5, rtol=1e-5)
    assert sum(model[i].r for i in range(4)) == 12


def test_all_layers_freeze_pmb_at_the_same_step_whatever_their_rank():
    model = four_layers()
    method = lamda_pp(r=4, eta=0.5, target_modules=("0", "1", "2", "3"))
    method.apply(model)
    assert len({model[i].r for i in range(4)}) > 1
    method.on_step(model, 8, 20)  # t = 9 < t_i = 10
    assert all(model[i].n_frozen == 9 * model[i].r // 10 < model[i].r for i in range(4))
    method.on_step(model, 9, 20)  # t = t_i
    assert all(model[i].n_frozen == model[i].r for i in range(4))
    model(torch.randn(3, 16)).sum().backward()
    assert all(model[i].lamda_B.grad is None and model[i].lamda_S.grad is not None for i in range(4))


def test_merge_gives_identical_outputs():
    model = four_layers()
    method = lamda_pp(r=4, target_modules=("0", "1", "2", "3"))
    method.apply(model)
    with torch.no_grad():
        for m in model:
            m.lamda_S.add_(0.1 * torch.randn_like(m.lamda_S))
    x = torch.randn(5, 16)
    y = model(x).detach()
    merged = method.merge(model)
    assert not any(isinstance(m, LaMDALinear) for m in merged.modules())
    torch.testing.assert_close(merged(x), y, rtol=1e-5, atol=1e-5)


def test_bad_hyperparameters_fail_with_the_field_name():
    for field, value in (("r", 0), ("eta", 2.0), ("rank_budget", 0), ("r_min", 0)):
        with pytest.raises(ValueError, match=f"lamda_pp: {field} must"):
            lamda_pp(**{field: value})
    with pytest.raises(ValueError, match="lamda_pp: rank_budget = 100 must lie in"):
        lamda_pp(r=4, rank_budget=100, target_modules=("0", "1")).apply(nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8)))
