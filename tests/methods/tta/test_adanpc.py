"""AdaNPC (arXiv:2304.12566): kNN vote over a source memory, confident test features appended, no backprop."""

import pytest
import torch
from torch import nn

from adaptbench.registry import get_method
from methods.tta.adanpc import AdaNPCConfig

C = 3


class ToyNet(nn.Module):
    """Linear → BatchNorm1d → ReLU → Linear, with features/classifier."""

    def __init__(self, d_in=6, d_hidden=8, n_classes=C):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d_in, d_hidden), nn.BatchNorm1d(d_hidden), nn.ReLU())
        self.classifier = nn.Linear(d_hidden, n_classes)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.classifier(self.features(x))


def source_batches(n_batches=4, n=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 6, generator=gen), torch.randint(0, C, (n,), generator=gen)) for _ in range(n_batches)]


def prepared(seed=0, **overrides):
    torch.manual_seed(seed)
    model = ToyNet().eval()
    method = get_method("adanpc").build(overrides)
    method.prepare_source(model, source_batches())
    method.attach(model)
    return method, model


def reference_knn(z, memory_z, memory_y, k, tau, floor=1e-5):
    """The kNN vote written out per sample with a full sort, independently of the module."""
    out = torch.zeros(z.shape[0], C)
    mem = memory_z / memory_z.norm(dim=1, keepdim=True)
    for i, zi in enumerate(z):
        sims = mem @ (zi / zi.norm())
        order = sorted(range(len(sims)), key=lambda j: -float(sims[j]))[:k]
        weights = torch.exp(sims[order] / tau)
        weights = weights / weights.sum()
        for w, j in zip(weights, order):
            out[i, memory_y[j]] += w
    return (out + floor).clamp(max=1.0)


def test_defaults_are_the_reference_scripts():
    cfg = AdaNPCConfig()
    assert (cfg.k, cfg.temperature, cfg.beta) == (100, 0.1, 0.1)
    with pytest.raises(ValueError, match="adanpc: k"):
        AdaNPCConfig(k=0)
    with pytest.raises(ValueError, match="adanpc: temperature"):
        AdaNPCConfig(temperature=0.0)


def test_prepare_builds_the_memory_from_normalised_source_features_and_true_labels():
    method, model = prepared()
    batches = source_batches()
    with torch.no_grad():
        z = torch.cat([model.features(x) for x, _ in batches])
    torch.testing.assert_close(method.memory_z, z / z.norm(dim=1, keepdim=True))
    assert torch.equal(method.memory_y, torch.cat([y for _, y in batches]))
    assert method.optimizer is None and not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("k,tau", [(1, 0.1), (5, 0.1), (7, 0.5), (500, 0.05)])
def test_prediction_equals_an_independent_knn(k, tau):
    method, model = prepared(k=k, temperature=tau, beta=2.0)  # beta > 1: nothing appended
    memory_z, memory_y = method.memory_z.clone(), method.memory_y.clone()
    x = torch.randn(10, 6, generator=torch.Generator().manual_seed(9))
    logits = method.forward_and_adapt(x)
    with torch.no_grad():
        expected = reference_knn(model.features(x), memory_z, memory_y, min(k, len(memory_y)), tau)
    torch.testing.assert_close(logits.exp(), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(logits.argmax(1), expected.argmax(1))


def test_confident_samples_are_appended_with_their_prediction_and_unconfident_ones_are_not():
    probe, model = prepared(k=5)
    x = torch.randn(12, 6, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        z = model.features(x)
    votes = reference_knn(z, probe.memory_z, probe.memory_y, 5, 0.1)
    confidence = votes.softmax(1).max(1).values  # the reference's confidence: softmax over the votes
    ordered = confidence.sort().values
    gap = int((ordered[1:] - ordered[:-1]).argmax())  # threshold in the widest gap: no rounding ties
    beta = float(ordered[gap] + ordered[gap + 1]) / 2
    keep = confidence >= beta
    assert 0 < int(keep.sum()) < len(keep)
    method, _ = prepared(k=5, beta=beta)
    size = len(method.memory_y)
    method.forward_and_adapt(x)
    assert len(method.memory_y) == size + int(keep.sum()) == method.last_stats["memory_size"]
    torch.testing.assert_close(method.memory_z[size:], z[keep] / z[keep].norm(dim=1, keepdim=True))
    assert torch.equal(method.memory_y[size:], votes[keep].argmax(1))


def test_appended_features_vote_for_later_batches():
    method, model = prepared(k=1, beta=0.0)  # k = 1: the nearest memory item decides
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(2))
    first = method.forward_and_adapt(x).argmax(1)
    second = method.forward_and_adapt(x).argmax(1)  # its own appended copy is now the nearest neighbour
    assert torch.equal(first, second)
    assert method.last_stats["appended"] == 4.0


def test_reset_restores_the_source_memory_and_model():
    method, model = prepared(beta=0.0)
    memory_z, memory_y = method.memory_z.clone(), method.memory_y.clone()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for seed in range(3):
        method.forward_and_adapt(torch.randn(8, 6, generator=torch.Generator().manual_seed(seed)))
    assert len(method.memory_y) == len(memory_y) + 24
    method.reset()
    assert torch.equal(method.memory_z, memory_z) and torch.equal(method.memory_y, memory_y)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_without_a_source_memory_it_is_the_source_classifier():
    torch.manual_seed(0)
    model = ToyNet()
    method = get_method("adanpc").build()
    method.attach(model)
    x = torch.randn(5, 6)
    logits = method.forward_and_adapt(x)
    with torch.no_grad():
        torch.testing.assert_close(logits, model(x))
    assert method.last_stats["fallback"] == 1.0 and len(method.memory_y) == 0


def test_prepare_accepts_dict_batches_with_labels():
    torch.manual_seed(0)
    model = ToyNet().eval()

    class DictNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.classifier = model, model.classifier

        def features(self, batch):
            return self.inner.features(batch["x"])

    method = get_method("adanpc").build()
    method.prepare_source(DictNet(), [{"x": x, "labels": y} for x, y in source_batches()])
    assert len(method.memory_y) == 64
    with pytest.raises(ValueError, match="adanpc: prepare_memory needs"):
        method.prepare_memory(torch.zeros(3, 4), torch.zeros(2))
