"""compare for an adapter written outside the package against a stored LLM grid: test_compare's LoRA variant on
Llama's q/v projections, in a temporary folder, fine-tuned and scored by lm-eval with the stored row's settings on a tiny
random Llama (synthetic category task, two seeds); only its own cells are trained."""

import textwrap

import pytest

from adaptbench.compare import compare
from adaptbench.tracks.llm.job import run_cell
from tests import test_compare
from tests.stored_grid import store_grid, unregister_afterwards  # noqa: F401 (autouse fixture)

GRID = {"grid": "tiny_llm_store", "kind": "llm", "methods": [{"name": "lora", "train": {"lr": 1e-3}}],
        "models": ["tiny-llama"], "tasks": ["syn_category"], "seeds": [0, 1], "zero_shot": True,
        "train": {"epochs": 1, "batch_size": 8, "max_length": 320, "max_train_samples": 16},
        "eval": {"tasks": ["syn_category"], "limit": 8, "batch_size": 8, "bootstrap_iters": 10}}

# test_compare's LoRA variant (orthogonal A), on Llama's attention projections
VARIANT = test_compare.VARIANT.replace('("query", "value")', '("q_proj", "v_proj")')
assert '("q_proj", "v_proj")' in VARIANT


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """The tiny LLM grid run cell by cell with the real job, stored by content with its index."""
    root = tmp_path_factory.mktemp("store")
    store_grid(root, GRID, lambda cell, folder: run_cell(
        method=cell.method, model=cell.model_source, task=cell.task, seed=cell.seed, method_params=cell.method_params,
        train_params=cell.train_params, evaluation=cell.config["eval"], out_dir=folder, label=cell.label, threads=1))
    return root


def test_an_llm_adapter_file_runs_only_its_cells_and_lands(stored, tmp_path):
    path = tmp_path / "qv_lora.py"  # registers as qv_lora (the file's stem)
    path.write_text(textwrap.dedent(VARIANT))
    before = set((stored / "cells").iterdir())
    out = compare(str(path), "tiny_llm_store", results=stored, threads=1)
    assert len(out.trained) == 2 and not out.reused  # two seeds, as the lora row
    assert len(set((stored / "cells").iterdir()) - before) == 2
    assert out.like == "lora" and set(out.ranks) == {"syn_category"}
    pairs = {(p["vs"], p["task"]): p for p in out.paired}
    assert pairs[("lora", "syn_category")]["n"] == 2  # paired on the shared seeds
    assert pairs[("zero-shot", "syn_category")]["verdict"] == "one seed: no interval"  # the base model: one cell
    assert "qv_lora against grid 'tiny_llm_store'" in out.text()
    again = compare(str(path), "tiny_llm_store", results=stored, threads=1)
    assert not again.trained and len(again.reused) == 2
