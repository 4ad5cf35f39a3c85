"""OwLore (arXiv:2405.18380): layers sampled with probability ∝ their outlier ratio, γ of them every K steps,
the rest frozen; embeddings and head always train; sampled layers train with GaLore's projection."""

import numpy as np
import pytest
import torch
from torch import nn

from adaptbench.protocol import optimizer_state_bytes
from adaptbench.registry import get_method
from methods.optimizers.owlore import (OwLoreOptimizer, layer_index, layer_outlier_ratios, outlier_ratio,
                                       sample_layers, sampling_probabilities)

P4 = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.query, self.norm = nn.Linear(d, d), nn.LayerNorm(d)


class Toy(nn.Module):
    """Names like BERT's: embeddings.weight, encoder.layer.{i}.query.weight/.bias, encoder.layer.{i}.norm.*,
    classifier.*; layer i's query weight has i+1 outliers among 0.01s (D_i = (i+1)/d²) when ``outliers``."""

    def __init__(self, layers=4, d=8, outliers=True):
        super().__init__()
        torch.manual_seed(0)
        self.embeddings, self.classifier = nn.Embedding(10, d), nn.Linear(d, 2)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList([Block(d) for _ in range(layers)])
        if outliers:
            with torch.no_grad():
                for i, block in enumerate(self.encoder.layer):
                    block.query.weight.fill_(0.01).view(-1)[: i + 1] = 1.0

    def forward(self, ids):
        h = self.embeddings(ids)
        for block in self.encoder.layer:
            h = h + torch.tanh(block.query(block.norm(h)))
        return self.classifier(h).pow(2).mean()


def build(model, seed=0, **overrides):
    torch.manual_seed(seed)  # the trainer's seed_everything: the sampling generator starts from it
    method = get_method("owlore").build({"outlier_threshold": 5.0, "rank": 2, **overrides})
    model = method.prepare_model(model)
    return method.build([(n, p) for n, p in model.named_parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)


@pytest.mark.parametrize("name,idx", [
    ("bert.encoder.layer.3.attention.self.query.weight", 3), ("model.layers.12.mlp.up_proj.weight", 12),
    ("transformer.h.0.attn.c_attn.weight", 0), ("roberta.encoder.layer.10.output.LayerNorm.bias", 10),
    ("bert.embeddings.word_embeddings.weight", None), ("classifier.weight", None)])
def test_layer_index_is_parsed_from_the_name(name, idx):
    assert layer_index(name) == idx


def test_outlier_ratio_matches_the_formula_over_the_whole_block():
    gen = np.random.default_rng(0)
    mats = [gen.standard_t(2, size=(16, 8)), gen.standard_t(2, size=(8, 24))]  # heavy-tailed, like trained weights
    a = np.abs(np.concatenate([m.ravel() for m in mats]))
    for M in (2.0, 5.0):
        expected = (a > M * a.mean()).mean()  # one mean over the block, not one per matrix
        assert expected > 0
        assert outlier_ratio([torch.from_numpy(m) for m in mats], M) == pytest.approx(expected, abs=1e-12)
    ratios = layer_outlier_ratios(Toy().named_parameters(), 5.0)
    assert ratios == pytest.approx({i: (i + 1) / 64 for i in range(4)})  # 1-D norms and biases excluded


def test_probabilities_are_proportional_to_the_ratios_and_uniform_when_all_zero():
    torch.testing.assert_close(sampling_probabilities([0.01, 0.02, 0.03, 0.04]), P4)
    torch.testing.assert_close(sampling_probabilities([0.0, 0.0]), torch.tensor([0.5, 0.5], dtype=torch.float64))
    torch.testing.assert_close(build(Toy()).probabilities, P4)


def inclusion_probabilities(p, gamma):
    """Successive sampling without replacement, by enumeration: P(i ∈ S) for γ ∈ {1, 2}."""
    if gamma == 1:
        return p
    return torch.tensor([p[i] + sum(p[j] * p[i] / (1 - p[j]) for j in range(len(p)) if j != i) for i in range(len(p))])


@pytest.mark.parametrize("gamma", [1, 2])
def test_sampling_frequencies_converge_to_the_probabilities(gamma):
    gen, draws = torch.Generator().manual_seed(0), 10000
    counts = torch.zeros(4, dtype=torch.float64)
    for _ in range(draws):
        picked = sample_layers(P4, gamma, gen)
        assert len(set(picked)) == gamma
        counts[picked] += 1
    expected = inclusion_probabilities(P4, gamma).double()
    torch.testing.assert_close(counts / draws, expected, rtol=0, atol=0.015)  # ≈ 3σ at 10⁴ draws


def test_the_optimizers_draws_follow_the_outlier_probabilities():
    opt, draws = build(Toy(), gamma=1), 4000
    counts = torch.zeros(4, dtype=torch.float64)
    for _ in range(draws):
        opt.resample()
        counts[opt.active] += 1
    torch.testing.assert_close(counts / draws, P4, rtol=0, atol=0.025)


def test_resamples_exactly_every_K_steps_from_the_runs_seed():
    model = Toy()
    opt = build(model, seed=5, gamma=2, period=3)
    ref = torch.Generator().manual_seed(5)
    expected = [sample_layers(opt.probabilities, 2, ref) for _ in range(4)]
    ids = torch.tensor([[1, 2, 3]])
    actives = [opt.active]
    for _ in range(9):
        model(ids).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        actives.append(opt.active)
    assert actives == [expected[t // 3] for t in range(10)]



def test_a_resumed_optimizer_continues_the_layer_sequence():
    # the sampler (updates, generator, active layers) travels in state_dict, so a resume draws what a run would
    model, ids = Toy(), torch.tensor([[1, 2, 3]])
    opt = build(model, seed=5, gamma=2, period=3)
    for _ in range(4):
        model(ids).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    saved = opt.state_dict()
    assert saved["sampler"]["updates"] == 4 and saved["sampler"]["active"] == opt.active
    resumed = build(Toy(), seed=5, gamma=2, period=3)
    resumed.load_state_dict(saved)
    assert resumed.active == opt.active and resumed.updates == 4
    sequences = []
    for o in (opt, resumed):
        seq = []
        for _ in range(6):
            o.step()  # no gradients: only the schedule advances
            seq.append(list(o.active))
        sequences.append(seq)
    assert sequences[0] == sequences[1]


def test_unsampled_layers_do_not_move_and_embeddings_and_head_always_do():
    model = Toy()
    opt = build(model, gamma=1, period=2)
    ids, seen = torch.tensor([[1, 2, 3, 4]]), set()
    for _ in range(8):
        active = set(opt.active)
        seen |= active
        assert {layer_index(n) for n, p in model.named_parameters() if p.requires_grad} - {None} == active
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        model(ids).backward()
        assert all((p.grad is None) == (layer_index(n) not in active | {None}) for n, p in model.named_parameters())
        opt.step()
        opt.zero_grad(set_to_none=True)
        moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        assert {"embeddings.weight", "classifier.weight", "classifier.bias"} <= moved
        assert {layer_index(n) for n in moved} - {None} == active  # every sampled layer moves, no other
    assert len(seen) > 1


def test_a_layer_leaving_the_sample_loses_its_state():
    model = Toy(outliers=False)
    opt = build(model, gamma=1, period=1)
    ids = torch.tensor([[1, 2, 3]])
    for _ in range(6):
        active = set(opt.active)
        model(ids).backward()
        opt.step()  # resamples after every step (K = 1)
        opt.zero_grad(set_to_none=True)
        held = {layer_index(n) for n, p in model.named_parameters() if p in opt.state} - {None}
        assert held == active & set(opt.active)


def test_state_bytes_are_the_sampled_layers_and_always_trained_tensors_only():
    d = 16
    model = Toy(d=d, outliers=False)
    opt = build(model, gamma=1, period=100)
    model(torch.tensor([[1, 2, 3]])).backward()
    opt.step()
    always = 10 * d + 2 * d + 2  # embeddings, classifier weight and bias: AdamW's m and v
    # the sampled layer: query weight via GaLore (R = G Q: 16×2 m and v; Q: 16×2), bias and norm via AdamW
    sampled = (2 * d * 2 + d * 2) + 2 * (d + 2 * d)
    assert optimizer_state_bytes(opt) == 4 * (2 * always + sampled) == 2320
    adamw = torch.optim.AdamW(Toy(d=d, outliers=False).parameters(), lr=1e-2)
    for p in adamw.param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    adamw.step()
    steps = 4 * len(adamw.param_groups[0]["params"])  # torch keeps a 4-byte step tensor per parameter
    per_layer = d * d + d + 2 * d
    assert optimizer_state_bytes(adamw) - steps == 4 * 2 * (always + 4 * per_layer) == 11280  # OwLore: 21%


def test_prepare_model_reads_frozen_base_weights():
    model = Toy()
    for block in model.encoder.layer:
        block.query.weight.requires_grad_(False)  # as under an adapter: the outlier-carrying matrix is frozen
    torch.testing.assert_close(build(model).probabilities, P4)
    method = get_method("owlore").build({"outlier_threshold": 5.0})
    bare = method.build([(n, p) for n, p in model.named_parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    torch.testing.assert_close(bare.probabilities, torch.full((4,), 0.25, dtype=torch.float64))  # no 2-D tensor seen


def test_unfreeze_all_restores_every_layer():
    model = Toy()
    opt = build(model, gamma=1)
    assert sum(p.requires_grad for p in model.parameters()) < len(list(model.parameters()))
    opt.unfreeze_all()
    assert all(p.requires_grad for p in model.parameters())


def test_gamma_is_capped_by_the_number_of_layers():
    opt = build(Toy(layers=2), gamma=5)
    assert opt.active == [0, 1]
    assert isinstance(opt, OwLoreOptimizer)


def test_no_layer_index_is_a_one_line_error():
    method = get_method("owlore").build({})
    with pytest.raises(ValueError, match=r"^owlore: no trainable parameter name has a layer index"):
        method.build([("classifier.weight", nn.Parameter(torch.randn(2, 4)))], lr=1e-3, weight_decay=0.0)


@pytest.mark.parametrize("field,value,rule", [("gamma", 0, "a positive integer"), ("period", 2.5, "a positive integer"),
                                              ("outlier_threshold", 0.0, "> 0"), ("rank", 0, "a positive integer")])
def test_bad_hyperparameters_name_the_field(field, value, rule):
    with pytest.raises(ValueError, match=rf"^owlore: {field} must be {rule}, got"):
        get_method("owlore").make_config({field: value})
