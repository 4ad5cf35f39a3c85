"""Label Shift Adapter (arXiv:2308.08810): g_φ(π) outputs (γ, β, ΔW, Δb) for the head and nothing else changes;
the online estimate π̂ converges to the target prior; the adapter plugs into a base TTA method."""

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from adaptbench import registry
from adaptbench.protocol import TTAMethod, TTAOptimConfig
from adaptbench.registry import get_method
from methods.tta.label_shift_adapter import LabelShiftAdapterConfig, prior_input, update_estimate

C, D = 3, 8


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: intra-op threads only add overhead (and contend on a shared 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class ToyNet(nn.Module):
    """Linear → BatchNorm1d → ReLU → Linear, with features/classifier."""

    def __init__(self, d_in=6):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d_in, D), nn.BatchNorm1d(D), nn.ReLU())
        self.classifier = nn.Linear(D, C)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.classifier(self.features(x))


MU = torch.tensor([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])  # class means, unit covariance


class BayesNet(nn.Module):
    """The exact posterior of N(μ_c, I) under a uniform prior: logits_c = μ_c·x − ‖μ_c‖²/2; features = x."""

    def __init__(self):
        super().__init__()
        self.classifier = nn.Linear(2, C)
        with torch.no_grad():
            self.classifier.weight.copy_(MU)
            self.classifier.bias.copy_(-(MU ** 2).sum(1) / 2)

    def features(self, x):
        return x

    def forward(self, x):
        return self.classifier(x)


def gaussian_batch(prior, n, gen):
    y = torch.multinomial(prior, n, replacement=True, generator=gen)
    return MU[y] + torch.randn(n, 2, generator=gen), y


def toy_batches(n_batches=4, n=32, seed=0, weights=(1.0, 1.0, 1.0)):
    gen = torch.Generator().manual_seed(seed)
    prior = torch.tensor(weights)
    return [(torch.randn(n, 6, generator=gen), torch.multinomial(prior, n, replacement=True, generator=gen))
            for _ in range(n_batches)]


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


FAST = {"adapter_steps": 200, "adapter_lr": 1e-2, "hidden_dim": 32}


def test_config_validation_names_the_field():
    assert LabelShiftAdapterConfig().base_method == "none"
    with pytest.raises(ValueError, match="label_shift_adapter: ema_momentum"):
        LabelShiftAdapterConfig(ema_momentum=1.0)
    with pytest.raises(ValueError, match="label_shift_adapter: adapter_steps"):
        LabelShiftAdapterConfig(adapter_steps=0)


def test_adapter_outputs_the_stated_parameters_and_starts_as_the_identity():
    torch.manual_seed(0)
    model = ToyNet()
    reference = copy.deepcopy(model).eval()
    method = get_method("label_shift_adapter").build()
    method.attach(model)
    gamma, beta, delta_w, delta_b = method.adapter(prior_input(torch.full((1, C), 1 / C), 1e-3))
    assert [tuple(t.shape) for t in (gamma, beta, delta_w, delta_b)] == [(1, D), (1, D), (1, C, D), (1, C)]
    assert torch.equal(gamma, torch.ones(1, D)) and not beta.any() and not delta_w.any() and not delta_b.any()
    x = torch.randn(5, 6)
    with torch.no_grad():
        assert torch.equal(method.forward_and_adapt(x), reference(x))  # no prepare_source: the source model


def test_prepare_source_trains_only_the_adapter_and_records_the_source_prior():
    torch.manual_seed(0)
    model = ToyNet()
    before = snapshot(model)
    batches = toy_batches(weights=(6.0, 3.0, 1.0))
    method = get_method("label_shift_adapter").build(FAST)
    method.prepare_source(model, batches)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())
    assert any(p.abs().sum() > 0 for p in method.adapter.out.parameters())  # φ moved off its zero init
    counts = torch.bincount(torch.cat([y for _, y in batches]), minlength=C).float()
    torch.testing.assert_close(method.source_prior, counts / counts.sum())
    method.attach(model)
    with pytest.raises(RuntimeError, match="before attach"):
        method.prepare_source(model, batches)


def test_the_stream_changes_only_the_estimate_and_logits_follow_the_formula():
    torch.manual_seed(0)
    model = ToyNet()
    method = get_method("label_shift_adapter").build(FAST)
    method.prepare_source(model, toy_batches())
    method.attach(model)
    params = {n: p.detach().clone() for n, p in method.model.named_parameters()}
    buffers = snapshot(method.model)
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        x = torch.randn(8, 6, generator=gen)
        pi = method.model.classifier.pi.clone()
        logits = method.forward_and_adapt(x)
        with torch.no_grad():  # f = (W + ΔW)(γ ⊙ h + β) + b + Δb, written out with the source head's W, b
            gamma, beta, delta_w, delta_b = method.adapter(prior_input(pi.unsqueeze(0), 1e-3))
            h2 = gamma * model.features(x) + beta
            expected = h2 @ (model.classifier.weight + delta_w[0]).T + model.classifier.bias + delta_b
        torch.testing.assert_close(logits, expected)
        torch.testing.assert_close(method.model.classifier.pi, update_estimate(pi, expected.softmax(1), 0.9))
    for n, p in method.model.named_parameters():
        assert torch.equal(p, params[n]), n
    changed = [k for k, v in method.model.state_dict().items() if not torch.equal(v, buffers[k])]
    assert changed == ["classifier.pi"]


def test_update_estimate_is_the_ema_of_batch_mean_predictions():
    pi, probs = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    torch.testing.assert_close(update_estimate(pi, probs, 0.75), 0.75 * pi + 0.25 * torch.tensor([0.5, 0.25, 0.25]))


def test_estimate_converges_to_the_true_prior_on_an_imbalanced_stream():
    gen = torch.Generator().manual_seed(0)
    source = [gaussian_batch(torch.ones(C) / C, 500, gen) for _ in range(6)]
    torch.manual_seed(0)
    model = BayesNet()
    method = get_method("label_shift_adapter").build({**FAST, "adapter_steps": 500, "adapter_batch_size": 512})
    method.prepare_source(model, source)
    method.attach(model)
    target = torch.tensor([0.6, 0.3, 0.1])
    naive = torch.zeros(C)
    for _ in range(100):
        x, _ = gaussian_batch(target, 64, gen)
        method.forward_and_adapt(x)
        with torch.no_grad():
            naive += model(x).softmax(1).mean(0) / 100
    estimate = method.model.classifier.pi
    assert (estimate - target).abs().max() < 0.03
    assert (estimate - target).abs().sum() < 0.6 * (naive - target).abs().sum()  # the unadjusted mean is biased


class NormEntropy(TTAMethod):
    """A Tent-like stand-in base: entropy minimisation of the BatchNorm affine parameters."""

    def configure_model(self, model):
        model.train().requires_grad_(False)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.requires_grad_(True)
        return model

    def params_to_adapt(self, model):
        return [p for p in model.parameters() if p.requires_grad]

    def prepare_fisher(self, batches):
        self.prepared = list(batches)

    @torch.enable_grad()
    def forward_and_adapt(self, inputs):
        logits = self.model(inputs)
        loss = -(logits.softmax(1) * logits.log_softmax(1)).sum(1).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.last_stats = {"entropy": float(loss.detach())}
        return logits.detach()


class EveryWeight(NormEntropy):
    def configure_model(self, model):
        return model.train().requires_grad_(True)


def with_base(monkeypatch, cls):
    spec = SimpleNamespace(name="stub", family="tta", build=lambda: cls(TTAOptimConfig(lr=0.1)))
    monkeypatch.setattr(registry, "get_method", lambda name: spec if name == "stub" else get_method(name))
    torch.manual_seed(0)
    model = ToyNet()
    method = get_method("label_shift_adapter").build({**FAST, "base_method": "stub"})
    method.prepare_source(model, toy_batches())
    return method, model


def test_plugs_into_a_base_method_that_adapts_norm_layers_and_reset_covers_both(monkeypatch):
    method, model = with_base(monkeypatch, NormEntropy)
    method.attach(model)
    method.prepare_fisher(["clean batch"])  # passed through to a base that has it (EATA)
    assert method.base.prepared == ["clean batch"]
    start = snapshot(method.model)
    for seed in range(3):
        method.forward_and_adapt(torch.randn(8, 6, generator=torch.Generator().manual_seed(seed)))
    assert "base_entropy" in method.last_stats
    changed = {k for k, v in method.model.state_dict().items() if not torch.equal(v, start[k])}
    assert "classifier.pi" in changed and "model.body.1.weight" in changed
    assert not any(k.startswith("classifier.adapter.") for k in changed)
    assert method.base.optimizer.state
    method.reset()
    for k, v in method.model.state_dict().items():
        assert torch.equal(v, start[k]), k
    assert not method.base.optimizer.state


def test_a_base_method_that_would_train_the_adapter_is_refused(monkeypatch):
    method, model = with_base(monkeypatch, EveryWeight)
    with pytest.raises(ValueError, match="trains the adapter's own weights"):
        method.attach(model)
