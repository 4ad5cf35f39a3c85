"""The TTA protocol itself (adaptbench/protocol.py): TTAOptimConfig builds the optimizer and validates its fields,
a config without it gets no optimizer, and the stream runner calls the preparation hooks directly."""

from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from adaptbench.protocol import TTAMethod, TTAOptimConfig
from adaptbench.tta import streams


@dataclass(frozen=True)
class ToyConfig(TTAOptimConfig):
    lr: float = 0.5  # a subclass overrides a default and keeps the others


@dataclass(frozen=True)
class PlainConfig:
    """A config without optimizer fields: the method adapts nothing by backprop."""


class Recorder(TTAMethod):
    """Adapts the whole linear model; records the hook calls."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.calls = []

    def configure_model(self, model):
        return model

    def params_to_adapt(self, model):
        return list(model.parameters())

    def prepare_source(self, model, source_batches):
        self.calls.append(("prepare_source", model, source_batches))

    def prepare_fisher(self, batches):
        self.calls.append(("prepare_fisher", batches))


def test_defaults_are_overridden_by_subclass_fields_and_name_errors_by_the_class():
    cfg = ToyConfig()
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.beta) == ("sgd", 0.5, 0.9, 0.0, 0.9)
    assert cfg.method_name == "toy"
    with pytest.raises(ValueError, match=r"^toy: optimizer must be one of \('sgd', 'adam'\), got 'lbfgs'$"):
        ToyConfig(optimizer="lbfgs")


@pytest.mark.parametrize("kind,cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam)])
def test_make_optimizer_builds_sgd_or_adam_from_the_fields(kind, cls):
    method = Recorder(ToyConfig(optimizer=kind, momentum=0.5, weight_decay=0.01, beta=0.8))
    method.attach(nn.Linear(3, 2))
    (group,) = method.optimizer.param_groups
    assert type(method.optimizer) is cls and group["lr"] == 0.5 and group["weight_decay"] == 0.01
    assert group["momentum"] == 0.5 if kind == "sgd" else group["betas"] == (0.8, 0.999)


def test_a_config_without_optimizer_fields_gets_no_optimizer():
    method = Recorder(PlainConfig())
    method.attach(nn.Linear(3, 2))
    assert method.optimizer is None and method.make_optimizer([]) is None


def test_a_backprop_config_with_nothing_to_adapt_is_an_error():
    with pytest.raises(ValueError, match="toy: params_to_adapt returned no parameters"):
        Recorder(ToyConfig()).make_optimizer([])


def test_the_base_hooks_are_no_ops():
    method = TTAMethod(PlainConfig())
    assert method.prepare_source(nn.Linear(3, 2), [(torch.zeros(1, 3), torch.zeros(1))]) is None
    assert method.prepare_fisher([(torch.zeros(1, 3), torch.zeros(1))]) is None


def test_the_runner_calls_prepare_source_before_and_prepare_fisher_after_attach():
    model, batches = nn.Linear(3, 2), [(torch.zeros(4, 3), torch.zeros(4))]
    stream = SimpleNamespace(model=model, source_batches=batches)
    method = Recorder(ToyConfig())
    streams.prepare_before_attach(method, stream)
    method.attach(stream.model)
    streams.prepare_after_attach(method, stream)
    assert method.calls == [("prepare_source", model, batches), ("prepare_fisher", batches)]
