"""Invariants every adapter in the registry must pass, on a tiny random BERT. Methods declare hints
(TRAINABLE, TEST_LR) as class data; nothing here branches on a method's class."""

import pytest
import torch

from adaptbench import registry, tasks
from adaptbench.models import HEAD_PREFIXES
from adaptbench.protocol import matches
from adaptbench.build import build_model, trainable_state

ADAPTERS = registry.available("adapter")
SPEC = tasks.get_task("syn_sentiment")


def init_batches(vocab_size, n=16, length=32):
    """One fixed batch of random token ids with ragged padding, shaped as the trainer's loader yields it."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, vocab_size, (n, length), generator=g)
    mask = (torch.arange(length)[None] < torch.randint(length // 2, length + 1, (n,), generator=g)[:, None]).long()
    return [{"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
             "labels": torch.zeros(n, dtype=torch.long)}]


def build(name, seed=0):
    method, model, _ = build_model(name, {}, "tiny-bert", SPEC, seed)
    if method.DATA_DRIVEN:  # checked initialised, as train() does before building the optimizer
        method.prepare(model, init_batches(model.config.vocab_size))
    return method, model


def intended(method, name):
    return name.startswith(HEAD_PREFIXES) or matches(name, method.TRAINABLE)


def sgd_steps(model, batch, lr, steps=3):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()


@pytest.mark.parametrize("name", ADAPTERS)
def test_starts_as_the_base_model_unless_documented(name, batch):
    method = registry.get_method(name).build()
    if not method.IDENTITY_AT_INIT:
        pytest.skip(f"{name} changes the model at init by design (IDENTITY_AT_INIT = False; see its docstring)")
    from adaptbench.models import load_for_classification

    base = load_for_classification("tiny-bert", 2, seed=0).model
    _, adapted = build(name, seed=0)
    base.eval(), adapted.eval()
    with torch.no_grad():
        torch.testing.assert_close(adapted(**batch).logits, base(**batch).logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ADAPTERS)
def test_only_intended_parameters_train(name, batch):
    method, model = build(name)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    assert any(flags.values())
    for n, trainable in flags.items():
        assert trainable == intended(method, n), n
    model(**batch).loss.backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == intended(method, n), n


@pytest.mark.parametrize("name", ADAPTERS)
def test_a_step_changes_nothing_frozen(name, batch):
    method, model = build(name)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    sgd_steps(model, batch, method.TEST_LR)
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved, "nothing moved"
    assert all(intended(method, n) for n in moved), sorted(n for n in moved if not intended(method, n))


@pytest.mark.parametrize("name", [n for n in ADAPTERS if registry.get_method(n).mergeable])
def test_merge_gives_identical_outputs(name, batch):
    method, model = build(name)
    sgd_steps(model, batch, method.TEST_LR)  # so that the update is not zero
    model.eval()
    with torch.no_grad():
        before = model(**batch).logits
        merged = method.merge(model)
        after = merged(**batch).logits
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    assert all(type(m).__module__.startswith(("torch.", "transformers.")) for m in merged.modules()), \
        "merged model should hold plain layers only"


@pytest.mark.parametrize("name", ADAPTERS)
def test_same_seed_same_run(name, batch):
    runs = []
    for _ in range(2):
        method, model = build(name, seed=3)
        sgd_steps(model, batch, method.TEST_LR, steps=2)
        runs.append(trainable_state(model))
    assert runs[0].keys() == runs[1].keys()
    for k in runs[0]:
        assert torch.equal(runs[0][k], runs[1][k]), k


@pytest.mark.parametrize("name", ADAPTERS)
def test_trainable_state_round_trip(name, batch, tmp_path):
    method, model = build(name, seed=1)
    sgd_steps(model, batch, method.TEST_LR)
    torch.save(trainable_state(model), tmp_path / "ckpt.pt")
    _, fresh = build(name, seed=1)  # untrained: its trainable tensors differ until the checkpoint loads
    assert any(not torch.equal(a, b) for a, b in zip(trainable_state(fresh).values(), trainable_state(model).values()))
    fresh.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True), strict=False)
    model.eval(), fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(**batch).logits, model(**batch).logits)
