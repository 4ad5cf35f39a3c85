"""Invariants every TTA method in the registry must pass on a tiny BatchNorm + LayerNorm model: it builds with
its paper defaults, attaches, returns finite (B, C) logits, reports numeric stats, and ``reset()`` brings back
the source model and optimizer so that replaying the stream reproduces the first run exactly.

The preparation hooks every TTAMethod has (no-ops by default) are called as the stream runner calls them:
``prepare_source(model, source_batches)`` with labelled source batches before ``attach`` (adanpc,
label_shift_adapter) and ``prepare_fisher(batches)`` with the same batches after ``attach`` (eata, owc). A method
whose paper defaults are too slow for a unit test may declare ``TEST_OVERRIDES`` (class data: config overrides
used here only). A method whose config inherits TTAOptimConfig gets exactly the optimizer it describes."""

import copy

import pytest
import torch

from adaptbench import registry
from adaptbench.protocol import TTAOptimConfig
from adaptbench.tta.toy import CLASSES, ToyNet, run, source_batches, stream

TTA = registry.available("tta")


@pytest.mark.parametrize("name", TTA)
def test_builds_adapts_and_resets_to_the_source(name):
    spec = registry.get_method(name)
    method = spec.build(getattr(spec.cls, "TEST_OVERRIDES", {}))
    model = ToyNet()
    method.prepare_source(model, source_batches())
    method.attach(model)
    method.prepare_fisher(source_batches())
    source_state = {k: v.detach().clone() for k, v in method.model.state_dict().items()}
    optimizer_state = copy.deepcopy(method.optimizer.state_dict()) if method.optimizer else None

    xs = stream(0)
    outputs, adapted_state = run(method, xs)
    for x, logits in zip(xs, outputs):
        assert logits.shape == (len(x), CLASSES) and torch.isfinite(logits).all()
        assert not logits.requires_grad
    assert all(isinstance(k, str) and isinstance(v, (int, float)) for k, v in method.last_stats.items())

    method.reset()
    for k, v in method.model.state_dict().items():
        assert torch.equal(v, source_state[k]), k
    if method.optimizer is not None:
        assert method.optimizer.state_dict() == optimizer_state
    replay, replay_state = run(method, xs)  # the method's own buffers were reset too
    for a, b in zip(outputs, replay):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    for k, v in replay_state.items():
        torch.testing.assert_close(v, adapted_state[k], rtol=0, atol=1e-6)


def test_every_tta_registry_name_is_its_file_stem():
    for name in TTA:
        assert registry.get_method(name).cls.__module__ == f"methods.tta.{name}"


@pytest.mark.parametrize("name", TTA)
def test_the_optimizer_is_the_configs_and_only_a_backprop_config_has_one(name):
    spec = registry.get_method(name)
    method = spec.build(getattr(spec.cls, "TEST_OVERRIDES", {}))
    method.prepare_source(ToyNet(), source_batches())
    method.attach(ToyNet())
    cfg = method.cfg
    if method.params_to_adapt(method.model):  # a config that forgot TTAOptimConfig would silently adapt nothing
        assert method.optimizer is not None
    if not isinstance(cfg, TTAOptimConfig):
        assert method.make_optimizer([]) is None  # adapts nothing by backprop, or delegates to a base method
        return
    assert method.optimizer is not None
    (group,) = method.optimizer.param_groups
    expected = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[cfg.optimizer]
    assert type(method.optimizer) is expected
    assert (group["lr"], group["weight_decay"]) == (cfg.lr, cfg.weight_decay)
    assert group.get("momentum", cfg.momentum) == cfg.momentum and group.get("betas", (cfg.beta,))[0] == cfg.beta
    assert {id(p) for p in group["params"]} == {id(p) for p in method.params_to_adapt(method.model)}


@pytest.mark.parametrize("name", [n for n in TTA if issubclass(registry.get_method(n).config, TTAOptimConfig)])
@pytest.mark.parametrize("field,value", [("optimizer", "rmsprop"), ("lr", 0.0), ("momentum", 1.0),
                                         ("weight_decay", -1.0), ("beta", 1.0)])
def test_invalid_optimizer_fields_fail_with_the_method_and_field_named(name, field, value):
    with pytest.raises(ValueError, match=f"^{name}: {field} must be"):
        registry.get_method(name).make_config({field: value})
