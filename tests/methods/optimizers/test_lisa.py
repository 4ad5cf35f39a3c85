"""LISA (arXiv:2403.17919, Alg. 1): embeddings and head always train; every K steps γ of the N_L middle
layers are sampled uniformly (probability γ/N_L each) and the others are frozen: no gradient, no move."""

import pytest
import torch
from torch import nn

from adaptbench.protocol import optimizer_state_bytes
from adaptbench.registry import get_method
from methods.optimizers.lisa import LISAAdamW, layer_index, sample_layers

LR = 1e-2
PATTERN = get_method("lisa").make_config({}).layer_pattern


class Toy(nn.Module):
    """Names like a BERT: embeddings.*, encoder.layer.<i>.*, classifier.*."""

    def __init__(self, n_layers=6, d=4):
        super().__init__()
        self.embeddings = nn.Embedding(10, d)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(nn.Linear(d, d) for _ in range(n_layers))
        self.classifier = nn.Linear(d, 2)

    def forward(self, ids):
        h = self.embeddings(ids).mean(1)
        for layer in self.encoder.layer:
            h = h + torch.tanh(layer(h))
        return self.classifier(h)


def build(model, wd=0.0, **overrides):
    return get_method("lisa").build(overrides).build(list(model.named_parameters()), LR, wd)


def loss(model, seed):
    ids = torch.randint(0, 10, (8, 3), generator=torch.Generator().manual_seed(seed))
    return model(ids).pow(2).mean()


@pytest.mark.parametrize("name,index", [
    ("bert.encoder.layer.3.attention.self.query.weight", 3), ("model.layers.11.mlp.up_proj.lora_A", 11),
    ("transformer.h.0.attn.c_attn.bias", 0), ("bert.embeddings.word_embeddings.weight", None),
    ("classifier.weight", None), ("bert.encoder.layer_norm.weight", None)])
def test_layer_index_is_parsed_from_names(name, index):
    assert layer_index(name, PATTERN) == index


def test_sampling_frequencies_converge_to_gamma_over_n_layers():
    gen, n_layers, gamma, draws = torch.Generator().manual_seed(0), 8, 2, 8000
    counts = torch.zeros(n_layers)
    for _ in range(draws):
        active = sample_layers(n_layers, gamma, gen)
        assert len(set(active)) == gamma
        counts[active] += 1
    freq = counts / draws
    assert (freq - gamma / n_layers).abs().max() < 0.02  # ~4 standard errors at p = 0.25, n = 8000


def test_embeddings_and_head_always_train_and_frozen_layers_never_move():
    torch.manual_seed(0)
    model = Toy()
    opt = build(model, wd=0.1, gamma=2, period=3)
    always = [model.embeddings.weight, model.classifier.weight, model.classifier.bias]
    seen, previous_active = set(), None
    for step in range(12):
        active = list(opt.active)
        if step % 3 == 0:
            previous_active = active
        assert active == previous_active  # constant within a period of K = 3 steps
        before = [p.detach().clone() for p in model.parameters()]
        loss(model, step).backward()
        for i, layer in enumerate(model.encoder.layer):
            assert (layer.weight.grad is not None) == (i in active)  # frozen: no gradient computed
            assert layer.weight.requires_grad == (i in active)
        opt.step()
        opt.zero_grad()
        after = dict(zip((id(p) for p in model.parameters()), before))
        for p in always:
            assert not torch.equal(p.detach(), after[id(p)])
        for i, layer in enumerate(model.encoder.layer):
            moved = not torch.equal(layer.weight.detach(), after[id(layer.weight)])
            assert moved == (i in active)  # frozen layers neither step nor decay
        seen.update(active)
    assert len(seen) > 2  # re-sampled: more than the first γ layers trained


def test_frozen_layers_release_their_state_and_memory_is_embeddings_head_and_gamma_layers():
    torch.manual_seed(1)
    model = Toy(n_layers=6)
    opt = build(model, gamma=2, period=1)
    for step in range(4):
        trained = set(opt.active)
        loss(model, step).backward()
        opt.step()  # then re-samples (K = 1): layers frozen now drop their moments
        opt.zero_grad()
    kept = trained & set(opt.active)  # trained last step and still active: the only layers with state
    stateful = {id(p) for p in opt.state}
    for i, layer in enumerate(model.encoder.layer):
        assert (id(layer.weight) in stateful) == (i in kept)
    per_param = lambda p: 2 * 4 * p.numel() + 4  # noqa: E731  (m, v in fp32 + AdamW's step tensor)
    non_layer = [model.embeddings.weight, model.classifier.weight, model.classifier.bias]
    layer_params = [p for i in kept for p in model.encoder.layer[i].parameters()]
    assert optimizer_state_bytes(opt) == sum(per_param(p) for p in non_layer + layer_params)
    full = torch.optim.AdamW(model.parameters(), lr=LR)
    for p in model.parameters():
        p.requires_grad_(True)
        p.grad = torch.zeros_like(p)
    full.step()
    assert optimizer_state_bytes(opt) < optimizer_state_bytes(full)


def test_keep_frozen_state_keeps_the_moments_like_lmflow():
    torch.manual_seed(2)
    model = Toy(n_layers=6)
    opt = build(model, gamma=2, period=1, keep_frozen_state=True)
    trained = set()
    for step in range(4):
        trained.update(opt.active)
        loss(model, step).backward()
        opt.step()
        opt.zero_grad()
    stateful = {id(p) for p in opt.state}
    assert all(id(model.encoder.layer[i].weight) in stateful for i in trained)


def test_gamma_equal_to_the_layer_count_is_adamw():
    torch.manual_seed(3)
    model, twin = Toy(n_layers=3), Toy(n_layers=3)
    twin.load_state_dict(model.state_dict())
    opt = build(model, wd=0.1, gamma=3, period=1)
    ref = torch.optim.AdamW([{"params": [p for n, p in twin.named_parameters() if p.ndim >= 2], "weight_decay": 0.1},
                             {"params": [p for n, p in twin.named_parameters() if p.ndim < 2], "weight_decay": 0.0}],
                            lr=LR)
    for step in range(3):
        for m, o in ((model, opt), (twin, ref)):
            loss(m, step).backward()
            o.step()
            o.zero_grad()
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q)


def test_same_seed_same_layer_sequence():
    sequences = []
    for _ in range(2):
        torch.manual_seed(7)
        opt = build(Toy(n_layers=8), gamma=2, period=1)
        seq = []
        for _ in range(5):
            seq.append(list(opt.active))
            opt.resample()
        sequences.append(seq)
    assert sequences[0] == sequences[1]
    assert isinstance(opt, LISAAdamW)



def test_a_resumed_optimizer_continues_the_layer_sequence():
    # the sampler (steps, generator, active layers) travels in state_dict, so a resume draws what a run would
    torch.manual_seed(7)
    model = Toy(n_layers=8)
    opt = build(model, gamma=2, period=2)
    for seed in range(3):
        loss(model, seed).backward()
        opt.step(), opt.zero_grad()
    saved = opt.state_dict()
    assert saved["sampler"]["steps"] == 3 and saved["sampler"]["active"] == opt.active
    torch.manual_seed(7)
    resumed = build(Toy(n_layers=8), gamma=2, period=2)  # its own first draw, replaced by the saved sampler
    resumed.load_state_dict(saved)
    assert resumed.active == opt.active
    assert [p.requires_grad for ps in resumed.layers for p in ps] == [p.requires_grad for ps in opt.layers for p in ps]
    sequences = []
    for o in (opt, resumed):
        seq = []
        for _ in range(4):
            o.step()  # no gradients: only the schedule advances
            seq.append(list(o.active))
        sequences.append(seq)
    assert sequences[0] == sequences[1]


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"^lisa: gamma=4 exceeds the 3 layers found; lower gamma"):
        build(Toy(n_layers=3), gamma=4)
    with pytest.raises(ValueError, match=r"^lisa: no parameter name matches layer_pattern"):
        get_method("lisa").build({}).build([("fc.weight", nn.Parameter(torch.zeros(2, 2)))], LR, 0.0)
    for field, value in [("gamma", 0), ("period", 1.5), ("layer_pattern", r"layer\.\d+"), ("layer_pattern", "(")]:
        with pytest.raises(ValueError, match=rf"^lisa: {field}"):
            get_method("lisa").make_config({field: value})
