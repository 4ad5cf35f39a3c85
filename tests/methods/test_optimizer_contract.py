"""Invariants every optimizer in the registry must pass, on a tiny random BERT built as the trainer builds it
(adaptbench/build.py: ``build_model`` applies the adapter, then the optimizer's ``prepare_model``; then
``build_optimizer`` hands the trainable parameters to the method's ``build``). Methods declare hints as class
data (``TEST_OVERRIDES``: config overrides used here only, e.g. the layer-sampling optimizers resample every
step); nothing here branches on a method's class.

Checked: ``build`` works with the paper defaults; a step moves only parameters that require grad and got a
gradient (a frozen part stays bit-identical, weight decay included); the same seed gives bitwise-equal
parameters; ``optimizer.state_dict()`` round-trips through a checkpoint into a fresh optimizer, whose next steps
equal the uninterrupted run's bitwise; ``optimizer_state_bytes`` equals an independent count of the state's
tensors and is > 0 after a step (every registered optimizer keeps state)."""

import io

import pytest
import torch

from adaptbench import registry, tasks
from adaptbench.protocol import optimizer_state_bytes
from adaptbench.build import build_model, build_optimizer, optimizer_method
from adaptbench.config import TrainConfig

OPTIMIZERS = registry.available("optimizer")
SPEC = tasks.get_task("syn_sentiment")
LR, WEIGHT_DECAY = 1e-3, 0.1  # decay on, so that a parameter decayed without a gradient would show
FROZEN = "bert.embeddings."  # frozen before the optimizer is built, as a partial adapter would leave them
RESUMED_STEPS = 3  # steps after a resume: the first checks the moments, later ones any schedule (layer sampling)


def build(name: str, seed: int = 0):
    """Model and optimizer as the training job builds them, with the embeddings frozen; returns (model, optimizer)."""
    spec = registry.get_method(name)
    cfg = TrainConfig(optimizer=name, optimizer_params=dict(getattr(spec.cls, "TEST_OVERRIDES", {})), lr=LR,
                      weight_decay=WEIGHT_DECAY)
    opt_method = optimizer_method(cfg)
    _, model, _ = build_model("full", {}, "tiny-bert", SPEC, seed, opt_method)
    for n, p in model.named_parameters():
        if n.startswith(FROZEN):
            p.requires_grad_(False)
    return model, build_optimizer(model, cfg, opt_method)


def step(model, optimizer, batch) -> set[str]:
    """One optimizer step on the batch (eval mode: no dropout, so runs differ only by what is tested); returns
    the names of the parameters that had a gradient."""
    model.eval()
    model(**batch).loss.backward()
    had_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return had_grad


def params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def state_tensors(obj):
    """Every tensor inside an optimizer's per-parameter state, nested containers included."""
    if torch.is_tensor(obj):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from state_tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from state_tensors(v)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_builds_with_defaults_and_steps_move_only_what_has_a_gradient(name, batch):
    model, optimizer = build(name)
    assert isinstance(optimizer, torch.optim.Optimizer)
    frozen = {n for n, p in model.named_parameters() if n.startswith(FROZEN)}
    assert frozen and not any(p.requires_grad for n, p in model.named_parameters() if n in frozen)
    for _ in range(3):  # the layer-sampling optimizers change requires_grad between steps
        before = params(model)
        requires_grad = {n for n, p in model.named_parameters() if p.requires_grad}
        had_grad = step(model, optimizer, batch)
        assert had_grad <= requires_grad
        moved = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
        assert moved, "nothing moved"
        assert moved <= had_grad, sorted(moved - had_grad)  # layers frozen by a sampler included
        assert not moved & frozen, sorted(moved & frozen)
        assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_same_seed_same_parameters(name, batch):
    runs = []
    for _ in range(2):
        model, optimizer = build(name, seed=3)
        for _ in range(3):
            step(model, optimizer, batch)
        runs.append(params(model))
    assert_bitwise_equal(runs[0], runs[1])


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_dict_round_trip_resumes_bitwise(name, batch):
    model, optimizer = build(name, seed=1)
    for _ in range(2):
        step(model, optimizer, batch)
    buffer = io.BytesIO()  # a checkpoint as the training loop writes it: model tensors, flags, optimizer state
    torch.save({"params": params(model), "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
                "optimizer": optimizer.state_dict()}, buffer)
    for _ in range(RESUMED_STEPS):
        step(model, optimizer, batch)
    uninterrupted = params(model)

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    fresh, fresh_optimizer = build(name, seed=1)
    fresh.load_state_dict(saved["params"], strict=False)
    for n, p in fresh.named_parameters():
        p.requires_grad_(saved["requires_grad"][n])
    fresh_optimizer.load_state_dict(saved["optimizer"])
    for _ in range(RESUMED_STEPS):
        step(fresh, fresh_optimizer, batch)
    assert_bitwise_equal(params(fresh), uninterrupted)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_state_bytes_counts_every_state_tensor(name, batch):
    model, optimizer = build(name)
    assert optimizer_state_bytes(optimizer) == 0  # no state before the first step
    step(model, optimizer, batch)
    counted = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in state_tensors(s))
    assert optimizer_state_bytes(optimizer) == counted > 0


def test_every_optimizer_registry_name_is_its_file_stem():
    for name in OPTIMIZERS:
        assert registry.get_method(name).cls.__module__ == f"methods.optimizers.{name}"
