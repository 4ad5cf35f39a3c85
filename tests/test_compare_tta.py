"""compare for a TTA method written outside the package: a LayerNorm-entropy variant in a temporary folder runs
on the streams of a tiny stored TTA grid (digits MLP source, two shifts, two seeds; stored by the real jobs),
trains only its own cells (and a source model only where the store lacks it), and lands with paired statistics."""

import shutil
import textwrap

import pytest

from adaptbench import registry
from adaptbench.compare import compare
from adaptbench.tta.grid import source_key
from adaptbench.tta.runner import adapt
from adaptbench.tta.streams import train_source_job
from tests.stored_grid import store_grid, unregister_afterwards  # noqa: F401 (autouse fixture)

GRID = {"grid": "tiny_tta_store", "kind": "tta", "methods": ["source", "tent"],
        "sources": [{"name": "mlp", "kind": "image", "dataset": "digits", "arch": "mlp_ln", "epochs": 2}],
        "shifts": {"image": ["gaussian_noise", "contrast"]}, "severities": [5],
        "scenarios": [{"name": "episodic", "batch_size": 64}, {"name": "continual", "mode": "continual",
                                                                "batch_size": 64}], "seeds": [0, 1]}

VARIANT = '''
"""Entropy minimisation on LayerNorm affine parameters only (a test's Tent variant)."""
from dataclasses import dataclass

import torch
from torch import nn

from adaptbench.protocol import TTAMethod, TTAOptimConfig
from adaptbench.registry import Paper, register


@dataclass(frozen=True)
class LNTentConfig(TTAOptimConfig):
    lr: float = 1e-3


@register(family="tta", paper=Paper(title="Tent on LayerNorm", arxiv=None, year=2025), config=LNTentConfig)
class LNTent(TTAMethod):
    def configure_model(self, model):
        model.train()
        model.requires_grad_(False)
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.requires_grad_(True)
        return model

    def params_to_adapt(self, model):
        return [p for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()]

    def forward_and_adapt(self, inputs):
        logits = self.model(inputs)
        loss = -(logits.softmax(1) * logits.log_softmax(1)).sum(1).mean()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return logits.detach()
'''


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """The tiny TTA grid, source and cells computed by the real jobs, stored by content with its index."""
    from adaptbench.tta.grid import sources

    root = tmp_path_factory.mktemp("store")
    entries = sources(GRID)

    def run(cell, folder):
        source = entries[cell.source]
        source_dir = root / "sources" / source_key(source)
        if not (source_dir / "source.json").is_file():
            train_source_job(source, source_dir, threads=1)
        return adapt(method=cell.method, method_params=cell.method_params, source_dir=source_dir, source=source,
                     scenario=cell.config["scenario"], shifts=list(cell.shifts), severities=[5], seed=cell.seed,
                     out_path=folder / "result.json", label=cell.label, threads=1)

    store_grid(root, GRID, run)
    return root


@pytest.fixture(scope="module")
def variant(tmp_path_factory):
    path = tmp_path_factory.mktemp("mine") / "ln_tent.py"
    path.write_text(textwrap.dedent(VARIANT))
    return path


def test_a_tta_method_file_runs_only_its_cells_and_lands_with_paired_statistics(stored, variant, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(stored, store)
    shutil.rmtree(store / "sources")  # a fresh clone holds records, not source checkpoints
    before = set((store / "cells").iterdir())
    out = compare(str(variant), "tiny_tta_store", results=store, threads=1)
    assert len(out.trained) == 4 and not out.reused  # 2 scenarios × 2 seeds, as the tent row
    assert len(set((store / "cells").iterdir()) - before) == 4  # nothing else ran
    assert any("trained 1 source model(s)" in n for n in out.notes)
    assert set(out.ranks) == {"episodic", "continual", "Avg"}
    vs = {(p["vs"], p["task"]) for p in out.paired}
    assert {("tent", "episodic"), ("source", "continual"), ("tent", "Avg")} <= vs
    assert all(p["n"] == 2 and p["verdict"] in ("better", "worse", "within noise") for p in out.paired)
    text = out.text()
    assert "ln_tent against grid 'tiny_tta_store'" in text and "4 cell(s) trained, 0 reused" in text
    again = compare(str(variant), "tiny_tta_store", results=store, threads=1)
    assert not again.trained and len(again.reused) == 4  # stored by content: never retrained
    assert registry.get_method("ln_tent").family == "tta"


def test_a_tta_grid_refuses_an_adapter(stored):
    with pytest.raises(ValueError, match=r"'lora' is an adapter method; a tta grid compares tta methods"):
        compare("lora", "tiny_tta_store", results=stored)


BROKEN = '''
"""Keeps a running mean of its inputs that reset() forgets to clear, and returns logits still in the graph."""
from dataclasses import dataclass

import torch

from adaptbench.protocol import TTAMethod, TTAOptimConfig
from adaptbench.registry import Paper, register


@dataclass(frozen=True)
class LeakyConfig(TTAOptimConfig):
    pass


@register(family="tta", paper=Paper(title="leaky", arxiv=None, year=2025), config=LeakyConfig)
class Leaky(TTAMethod):
    mean = 0.0

    def configure_model(self, model):
        return model.train()

    def params_to_adapt(self, model):
        return list(model.classifier.parameters())

    def forward_and_adapt(self, inputs):
        self.mean = 0.5 * self.mean + 0.5 * float(inputs.mean())
        logits = self.model(inputs - self.mean)
        logits.logsumexp(1).mean().backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return logits
'''


def test_check_method_runs_the_tta_contract_in_plain_words(variant, tmp_path):
    from adaptbench.user_methods import check_method, resolve_method

    good = check_method(resolve_method(str(variant)))
    assert [c.status for c in good] == ["PASS"] * 4, [c.line() for c in good]
    path = tmp_path / "leaky.py"
    path.write_text(textwrap.dedent(BROKEN))
    lines = {c.name: c for c in check_method(resolve_method(str(path)))}
    adapts = lines["adapts a stream: finite, detached (B, C) logits, numeric stats"]
    assert adapts.status == "FAIL" and "return logits.detach()" in adapts.detail
    resets = lines["reset() restores the source; a replay reproduces the run"]
    assert resets.status == "FAIL" and "reset_state()" in resets.detail
