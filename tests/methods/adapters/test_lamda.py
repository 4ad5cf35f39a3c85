"""LaMDA's mechanism (arXiv:2406.12832): y = W_res x + s·B S A x with PMA A frozen, S trainable, PMB B trainable
and then frozen component by component (largest singular value first) until step t_i = ⌈η·T⌉."""

import copy

import pytest
import torch
from torch import nn

from adaptbench.registry import get_method
from methods.adapters._lamda_math import LaMDALinear, frozen_components, updated_parameters


def lamda(**params):
    return get_method("lamda").build(params)


def one_linear(d_out=12, d_in=16, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, d_out))


@pytest.mark.parametrize("shape, alpha", [((12, 16), 4.0), ((16, 12), 16.0)])
def test_spectral_init_puts_the_top_r_triplets_in_the_path_and_the_rest_in_the_residual(shape, alpha):
    model = one_linear(*shape)
    W = model[0].weight.detach().clone()
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    lamda(r=4, alpha=alpha, target_modules=("0",)).apply(model)
    m = model[0]
    s = alpha / 4
    eye = torch.eye(4)
    torch.testing.assert_close(m.lamda_A @ m.lamda_A.T, eye, atol=1e-5, rtol=0)  # PMA: top-4 right singular vectors
    torch.testing.assert_close(m.lamda_B.T @ m.lamda_B, eye, atol=1e-5, rtol=0)  # PMB: top-4 left singular vectors
    torch.testing.assert_close(m.lamda_S, torch.diag(S[:4]) / s, atol=1e-5, rtol=1e-5)  # S = Σ_r / s
    torch.testing.assert_close(m.delta_weight(), U[:, :4] @ torch.diag(S[:4]) @ Vh[:4], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m.base.weight + m.delta_weight(), W, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(torch.linalg.svdvals(m.base.weight)[: len(S) - 4], S[4:], atol=1e-5, rtol=1e-5)


def test_starts_as_the_base_model_and_only_s_and_b_get_gradients(tiny, batch):
    reference, _ = tiny(seed=0)
    model, _ = tiny(seed=0)
    lamda(r=4).apply(model)
    wrapped = {n for n, m in model.named_modules() if isinstance(m, LaMDALinear)}
    assert len(wrapped) == 2 * 6  # query, key, value, attention output, intermediate, output in 2 layers
    model.eval(), reference.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, reference(**batch).logits, rtol=0, atol=1e-5)
    model(**batch).loss.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads == {f"{n}.{p}" for n in wrapped for p in ("lamda_S", "lamda_B")}
    assert "lamda_A" not in dict(model.named_parameters()) and all(
        m.lamda_A.requires_grad is False for m in model.modules() if isinstance(m, LaMDALinear))


def test_schedule_freezes_components_at_an_even_pace_up_to_t_i():
    # T = 100, η = 0.3 → t_i = 30; r = 4 → one more component every 7.5 steps
    counts = [frozen_components(t, 100, 4, 0.3) for t in range(0, 101)]
    assert counts[0] == 0 and counts[7] == 0 and counts[8] == 1 and counts[15] == 2
    assert counts[22] == 2 and counts[23] == 3 and counts[29] == 3 and counts[30] == 4 and counts[100] == 4
    assert all(a <= b for a, b in zip(counts, counts[1:]))
    assert frozen_components(1, 1, 8, 0.3) == 8  # a one-step run freezes PMB after its only step


def test_progressive_freezing_stops_pmb_columns_exactly_and_then_all_of_pmb():
    """T = 20 steps, η = 0.5 → t_i = 10; r = 4: after t steps ⌊4t/10⌋ leading columns of B are frozen. AdamW with
    weight decay would move zero-gradient columns; frozen ones must not move at all. From t_i on, B gets no
    gradient at all (grad None, so the optimizer skips it) and only S trains."""
    model = one_linear()
    method = lamda(r=4, alpha=4.0, eta=0.5, target_modules=("0",))
    method.apply(model)
    m = model[0]
    opt = torch.optim.AdamW([m.lamda_S, m.lamda_B], lr=1e-2, weight_decay=0.1)
    x, y = torch.randn(32, 16), torch.randn(32, 12)
    anchors = {}
    for step in range(20):
        before_S = m.lamda_S.detach().clone()
        ((m(x) - y) ** 2).mean().backward()
        n = m.n_frozen
        if n < 4:  # frozen columns get no gradient, the others do
            assert torch.count_nonzero(m.lamda_B.grad[:, :n]) == 0
            assert torch.count_nonzero(m.lamda_B.grad[:, n:]) > 0
        else:
            assert m.lamda_B.grad is None
        opt.step()
        opt.zero_grad(set_to_none=True)
        method.on_step(model, step, 20)
        t = step + 1
        assert m.n_frozen == min(4, 4 * t // 10)  # PMB completely frozen exactly at t_i = 10
        assert updated_parameters(model) == 4 * 4 + 12 * (4 - m.n_frozen)
        for j in range(m.n_frozen):
            anchors.setdefault(j, m.lamda_B[:, j].detach().clone())
            assert torch.equal(m.lamda_B[:, j], anchors[j]), (t, j)
        assert not torch.equal(m.lamda_S, before_S)  # the core S trains throughout
    assert len(anchors) == 4 and m.n_frozen == 4


def test_merge_gives_a_plain_linear_with_the_same_outputs():
    model = one_linear()
    method = lamda(r=4, target_modules=("0",))
    method.apply(model)
    with torch.no_grad():
        model[0].lamda_S.add_(0.1 * torch.randn(4, 4))
        model[0].lamda_B.add_(0.1 * torch.randn(12, 4))
    x = torch.randn(5, 16)
    y = model(x).detach()
    merged = method.merge(model)
    assert type(merged[0]) is nn.Linear
    torch.testing.assert_close(merged(x), y, rtol=1e-5, atol=1e-5)


def test_rank_is_clipped_to_the_matrix():
    m = LaMDALinear(nn.Linear(6, 9), r=64, alpha=16.0)
    assert m.r == 6 and m.lamda_S.shape == (6, 6) and m.base.weight.abs().max() < 1e-5


def count(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_roberta_base_counts_before_and_after_pmb_freezes():
    """Defaults (r = 64) on the six linear layers of 12 RoBERTa-base blocks: r² + d_out·r each while PMB trains,
    r² each (only S) once it is frozen."""
    from transformers import AutoModelForSequenceClassification, RobertaConfig

    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(RobertaConfig(num_labels=2))
        method = lamda()
        method.apply(model)
        assert count(model) == updated_parameters(model) == 12 * (6 * 64 * 64 + 64 * (4 * 768 + 3072 + 768))
        assert count(model) == 5_603_328
        method.on_step(model, 29, 100)  # t = 30 = t_i
    assert updated_parameters(model) == 12 * 6 * 64 * 64 == 294_912


def test_llama_2_7b_count_after_pmb_freezes():
    """The released run (train_wikitext.sh): rank 64 on q, k, v, o, gate, up, down of Llama-2-7B's 32 blocks."""
    from transformers import LlamaConfig, LlamaModel

    with torch.device("meta"):
        model = LlamaModel(LlamaConfig(num_hidden_layers=2))  # 7B widths; 2 of the 32 blocks suffice to count
        method = lamda()
        method.apply(model)
        per_block_b = 64 * (4 * 4096 + 2 * 11008 + 4096)  # d_out of q, k, v, o, down; gate, up
        assert count(model) == 2 * (7 * 64 * 64 + per_block_b)
        method.on_step(model, 0, 1)
    assert updated_parameters(model) * 16 == 32 * 7 * 64 * 64 == 917_504


def test_bad_hyperparameters_fail_with_the_field_name():
    for field, value in (("r", 0), ("alpha", 0.0), ("eta", 0.0), ("eta", 1.5), ("target_modules", ())):
        with pytest.raises(ValueError, match=f"lamda: {field} must"):
            lamda(**{field: value})


def train_steps(model, method, opt, steps, total_steps, x, y):
    """The training loop's hook order around each optimizer step (adaptbench/loop.py)."""
    for step in steps:
        method.before_step(model, step, total_steps)
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        method.on_step(model, step, total_steps)


@pytest.mark.parametrize("name", ["lamda", "lamda_pp"])
def test_resuming_from_a_checkpoint_continues_the_freezing_schedule_exactly(name):
    """A resumable checkpoint holds the trained tensors, persistent buffers and the optimizer, not the layers'
    frozen-column count: the first step after a resume must still keep the already frozen columns of B fixed.
    T = 12, η = 0.5 → t_i = 6; resumed after 5 steps, when ⌊4·5/6⌋ = 3 of the 4 columns are frozen."""
    total, resume_at = 12, 5
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 16, generator=g), torch.randn(32, 12, generator=g)

    def fresh():
        model = one_linear()
        method = get_method(name).build({"r": 4, "alpha": 4.0, "eta": 0.5, "target_modules": ("0",)})
        method.apply(model)
        opt = torch.optim.AdamW([model[0].lamda_S, model[0].lamda_B], lr=1e-2, weight_decay=0.1)
        return model, method, opt

    model, method, opt = fresh()
    train_steps(model, method, opt, range(total), total, x, y)
    straight = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    model, method, opt = fresh()
    train_steps(model, method, opt, range(resume_at), total, x, y)
    assert model[0].n_frozen == 3
    tensors = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer_state, method_state = copy.deepcopy(opt.state_dict()), copy.deepcopy(method.state_dict())

    model, method, opt = fresh()  # a new process: layers rebuilt, nothing frozen yet
    model.load_state_dict(tensors, strict=False)
    opt.load_state_dict(optimizer_state)
    method.load_state_dict(method_state)
    train_steps(model, method, opt, range(resume_at, total), total, x, y)
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p, straight[n]), n
