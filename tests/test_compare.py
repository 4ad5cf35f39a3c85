"""Bring your own method, end to end: a LoRA variant written in a temporary folder (orthogonal A at init)
goes through check-method and compare against a tiny fine-tuning grid stored by the real jobs (tiny-bert,
syn_sentiment, 1 epoch of 32 samples, 2 seeds), and only the new method's cells are trained."""

import json
import textwrap

import pytest

from adaptbench import grid as gridlib
from adaptbench import registry
from adaptbench.compare import compare, protocol_diff
from adaptbench.leaderboard_commands import COMMANDS
from adaptbench.results import config_hash
from adaptbench.tracks.finetune import job
from adaptbench.user_methods import (METHODS_PATH_ENV, check_method, forget, load_entry_points, load_from_env,
                                     load_method_file, load_methods_path, resolve_method, scan_method_file)

GRID = {"grid": "tiny_store", "kind": "finetune", "methods": [{"name": "lora", "train": {"lr": 5e-3}}, "full"],
        "models": ["tiny-bert"], "tasks": ["syn_sentiment"], "seeds": [0, 1],
        "train": {"epochs": 1, "batch_size": 16, "max_train_samples": 32, "max_eval_samples": 32, "max_length": 32}}

VARIANT = '''
"""LoRA with an orthogonal A at init (a test's variant; B = 0, so the model starts as the base)."""
from dataclasses import dataclass

import torch
from torch import nn

from adaptbench.protocol import Adapter, fold_wrapped_layers, freeze_all, replace_module, target_linears
from adaptbench.registry import Paper, register
from methods.adapters._layers import LowRankLinear


@dataclass(frozen=True)
class OrthoLoRAConfig:
    r: int = 4
    alpha: float = 4.0
    target_modules: tuple = ("query", "value")


@register(family="adapter", paper=Paper(title="LoRA, orthogonal A", arxiv=None, year=2025), config=OrthoLoRAConfig,
          mergeable=True)
class OrthoLoRA(Adapter):
    TRAINABLE = ("*.lora_A", "*.lora_B")

    def apply(self, model: nn.Module) -> nn.Module:
        freeze_all(model)
        for name, linear in target_linears(model, self.cfg.target_modules):
            layer = LowRankLinear(linear, self.cfg.r, self.cfg.alpha, 0.0, None)
            torch.nn.init.orthogonal_(layer.lora_A)
            replace_module(model, name, layer)
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        return fold_wrapped_layers(model, LowRankLinear)
'''


@pytest.fixture(autouse=True, scope="module")
def unregister_afterwards():
    """Methods loaded here leave the registry with this module (tests/test_manifest.py compares it with the
    manifest)."""
    yield
    forget()
    assert all(spec.cls.__module__.startswith("methods.") for spec in registry._REGISTRY.values())


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """The tiny grid run cell by cell with the real jobs, stored by content with its index."""
    root = tmp_path_factory.mktemp("store")
    plan = gridlib.plan(GRID)
    for cell in plan.cells:
        folder = root / "cells" / cell.key
        record = job.train(method=cell.method, model=cell.model_source, task=cell.task, seed=cell.seed,
                           method_params=cell.method_params, train_params=cell.train_params, out_dir=folder,
                           label=cell.label, threads=1, progress=False)
        assert config_hash(record["config"]) == cell.key  # the job names its cell as the grid does
    gridlib.write_index(root / "grids" / GRID["grid"] / "index.json", gridlib.index_json(plan, GRID["grid"], "finetune"))
    return root


@pytest.fixture(scope="module")
def variant(tmp_path_factory):
    path = tmp_path_factory.mktemp("mine") / "ortho_lora.py"
    path.write_text(textwrap.dedent(VARIANT))
    return path


def parse(argv):
    import argparse

    parser = argparse.ArgumentParser(prog="adaptbench")
    sub = parser.add_subparsers(dest="stage", required=True)
    for command in COMMANDS:
        command.add_arguments(sub.add_parser(command.name))
    args = parser.parse_args(argv)
    return next(c for c in COMMANDS if c.name == args.stage).run, args


def test_check_method_passes_the_variant_in_plain_words(variant, capsys):
    run, args = parse(["check-method", str(variant)])
    assert run(args) == 0
    out = capsys.readouterr().out
    assert "ortho_lora (adapter, from ortho_lora.py)" in out
    for line in ("PASS  starts as the base model", "PASS  merge gives the same outputs", "PASS  same seed, same run",
                 "PASS  one step moves them and nothing frozen"):
        assert line in out
    assert "PASSED: 7 of 7" in out


def test_check_method_names_what_fails(tmp_path):
    broken = tmp_path / "leaky_lora.py"  # B starts non-zero and a frozen bias is left trainable
    broken.write_text(textwrap.dedent(VARIANT).replace("OrthoLoRA", "LeakyLoRA").replace(
        "torch.nn.init.orthogonal_(layer.lora_A)",
        "torch.nn.init.orthogonal_(layer.lora_A); torch.nn.init.ones_(layer.lora_B); linear.bias.requires_grad_(True)"))
    (name,) = load_method_file(broken)
    checks = {c.name: c for c in check_method(name)}
    assert checks["starts as the base model"].status == "FAIL"
    assert "IDENTITY_AT_INIT = False" in checks["starts as the base model"].detail
    assert checks["only TRAINABLE parameters (and the head) get gradients"].status == "FAIL"
    assert "bias" in checks["only TRAINABLE parameters (and the head) get gradients"].detail


def test_method_files_fail_in_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.py: no such method file"):
        load_method_file(tmp_path / "nope.py")
    (tmp_path / "syntax_bad.py").write_text("def f(:\n")
    with pytest.raises(ValueError, match=r"syntax_bad.py:1: syntax error"):
        load_method_file(tmp_path / "syntax_bad.py")
    (tmp_path / "empty_method.py").write_text("X = 1\n")
    with pytest.raises(ValueError, match="registers no method; decorate its class with @register"):
        load_method_file(tmp_path / "empty_method.py")
    (tmp_path / "lora.py").write_text(textwrap.dedent(VARIANT))
    with pytest.raises(ValueError, match="its name .lora. is already a built-in method"):
        load_method_file(tmp_path / "lora.py")
    assert registry.get_method("lora").cls.__module__ == "methods.adapters.lora"  # the built-in is untouched


def test_compare_trains_only_the_new_cells_and_places_them(stored, variant, monkeypatch, capsys):
    calls = []
    real_train = job.train
    monkeypatch.setattr(job, "train", lambda **kw: calls.append(kw["method"]) or real_train(**kw))
    before = {p.name for p in (stored / "cells").iterdir()}
    run, args = parse(["compare", str(variant), "--against", "tiny_store", "--results", str(stored), "--threads", "1",
                       "--train-params", json.dumps({"lr": 5e-3})])
    run(args)
    out = capsys.readouterr().out
    assert calls == ["ortho_lora", "ortho_lora"]  # its two seeds; no stored cell retrained
    assert len({p.name for p in (stored / "cells").iterdir()} - before) == 2
    assert "ortho_lora against grid 'tiny_store' (cells as 'lora', same protocol): 2 cell(s) trained, 0 reused" in out
    assert "rank (1 = best): syn_sentiment " in out
    for label in ("lora", "full"):  # paired against every stored row, on both seeds
        assert f"| {label} " in out
    assert "p (paired t)" in out and "Pareto (score vs trainable parameters)" in out

    again = compare(str(variant), "tiny_store", stored, train_params={"lr": 5e-3}, threads=1)
    assert again.trained == [] and len(again.reused) == 2 and calls == ["ortho_lora", "ortho_lora"]
    assert {p["vs"] for p in again.paired} == {"lora", "full"} and all(p["n"] == 2 for p in again.paired)
    assert all(p["verdict"] in ("better", "worse", "within noise") for p in again.paired)


def test_compare_refuses_another_protocol_and_names_the_fields(stored, variant):
    with pytest.raises(ValueError, match=r"refusing to compare across protocols: .*budget.max_length: new 16 vs stored 32"):
        compare(str(variant), "tiny_store", stored, train_params={"max_length": 16}, threads=1)
    assert protocol_diff({"a": {"b": 1}, "c": 2}, {"a": {"b": 2}, "c": 2}) == ["a.b: new 1 vs stored 2"]


def test_compare_one_line_errors(stored, variant):
    with pytest.raises(FileNotFoundError, match="no stored grid 'tiny_stor'. Did you mean: tiny_store"):
        compare(str(variant), "tiny_stor", stored)
    with pytest.raises(ValueError, match="--like: grid 'tiny_store' has no stored row 'pissa'; rows: full, lora"):
        compare(str(variant), "tiny_store", stored, like="pissa")


def test_an_installed_package_registers_through_its_entry_point(tmp_path, monkeypatch):
    package = tmp_path / "my_adapters"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "ep_lora.py").write_text(textwrap.dedent(VARIANT))
    info = tmp_path / "my_adapters-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-adapters\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[adaptbench.methods]\nep_lora = my_adapters.ep_lora\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_entry_points() == ["ep_lora"]
    assert resolve_method("ep_lora") == "ep_lora" and registry.get_method("ep_lora").family == "adapter"
    assert "ep_lora" in forget() and "ep_lora" not in registry._REGISTRY


def test_a_methods_path_folder_and_a_torch_free_scan(tmp_path, variant):
    folder = tmp_path / "my_methods"
    folder.mkdir()
    (folder / "ortho_lora_b.py").write_text(textwrap.dedent(VARIANT))
    (folder / "_helpers.py").write_text("raise RuntimeError('never imported')\n")
    assert load_methods_path(["my_methods"], base=tmp_path) == ["ortho_lora_b"]
    entry = scan_method_file(variant)["ortho_lora"]
    assert entry == {"family": "adapter", "module": "adaptbench_user_methods.ortho_lora", "data_driven": False,
                     "mergeable": True, "params": {"r": 4, "alpha": 4.0, "target_modules": ("query", "value")}}
    from adaptbench import manifest

    lora = scan_method_file(registry.METHODS_DIR / "adapters" / "lora.py")["lora"]  # the scan agrees with the import
    assert json.loads(json.dumps(lora["params"], default=list)) == manifest.load()["lora"]["params"]
    with pytest.raises(FileNotFoundError, match="methods_path: .*nowhere is neither a method file nor a folder"):
        load_methods_path("nowhere", base=tmp_path)


SIGN_SGD = '''
"""signSGD with momentum (a test's optimizer): θ ← θ − η·sign(m), m ← β·m + (1 − β)·g."""
from dataclasses import dataclass

import torch

from adaptbench.protocol import OptimizerMethod
from adaptbench.registry import Paper, register


@dataclass(frozen=True)
class SignSGDConfig:
    beta: float = 0.9


class _SignSGD(torch.optim.Optimizer):
    def __init__(self, params, lr, beta):
        super().__init__(params, dict(lr=lr, beta=beta))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    m = self.state[p].setdefault("m", torch.zeros_like(p))
                    m.mul_(group["beta"]).add_(p.grad, alpha=1 - group["beta"])
                    p.add_(torch.sign(m), alpha=-group["lr"])


@register(family="optimizer", paper=Paper(title="signSGD", arxiv="1802.04434", year=2018), config=SignSGDConfig)
class SignSGD(OptimizerMethod):
    def build(self, named_params, lr, weight_decay):
        return _SignSGD([p for _, p in named_params], lr=lr, beta=self.cfg.beta)
'''


def test_an_optimizer_goes_through_check_method_and_compare(stored, tmp_path, monkeypatch):
    path = tmp_path / "sign_sgd.py"
    path.write_text(textwrap.dedent(SIGN_SGD))
    (name,) = load_method_file(path)
    assert [c.status for c in check_method(name)] == ["PASS"] * 4
    calls = []
    real_train = job.train
    monkeypatch.setattr(job, "train", lambda **kw: calls.append((kw["method"], kw["train_params"]["optimizer"]))
                        or real_train(**kw))
    result = compare(str(path), "tiny_store", stored, train_params={"lr": 1e-3}, threads=1)
    assert result.like == "full" and calls == [("full", "sign_sgd")] * 2  # the full model, trained by signSGD
    assert {p["vs"] for p in result.paired} == {"lora", "full"}


def test_a_grid_expands_a_user_method_as_its_job_will(variant, tmp_path, monkeypatch):
    """What a grid's ``methods_path:`` gives once the grid and the jobs call ``add_to_manifest`` /
    ``load_from_env``: the method expands torch-free with its file's defaults, and the job computes the
    same cell key (so the cell's folder is found, and rerunning the grid trains nothing)."""
    monkeypatch.setenv(METHODS_PATH_ENV, str(variant))
    assert load_from_env() == ["ortho_lora"]
    config = {**GRID, "grid": "mine", "methods": [{"name": "ortho_lora", "params": {"r": 2}}], "seeds": [0]}
    (cell,) = gridlib.plan(config).cells
    assert cell.config["method_params"] == {"r": 2, "alpha": 4.0, "target_modules": ["query", "value"]}
    record = job.train(method=cell.method, model=cell.model_source, task=cell.task, seed=cell.seed,
                       method_params=cell.method_params, train_params=cell.train_params, out_dir=tmp_path / "cell",
                       threads=1, progress=False)
    assert config_hash(record["config"]) == cell.key


def test_a_stored_row_under_another_protocol_is_left_out_by_name(stored, variant, tmp_path):
    import shutil

    from adaptbench.results import atomic_write_json, read_json

    root = shutil.copytree(stored, tmp_path / "store")
    index_path = root / "grids" / "tiny_store" / "index.json"
    index = read_json(index_path)
    entry = next(e for e in index["cells"] if e["label"] == "full" and e["seed"] == 0)
    record = read_json(root / "cells" / entry["key"] / "result.json")
    record["protocol"]["budget"]["epochs"] = 2  # as if this grid entry had its own budget
    record["protocol_hash"] = config_hash(record["protocol"])
    record["config_hash"] = "0" * 16
    atomic_write_json(root / "cells" / record["config_hash"] / "result.json", record)
    index["cells"].append({**entry, "key": record["config_hash"], "label": "full_2ep"})
    atomic_write_json(index_path, index)
    result = compare(str(variant), "tiny_store", root, train_params={"lr": 5e-3}, threads=1)
    assert result.notes == ["row 'full_2ep': 1 cell(s) ran under another protocol, left out"]
    assert "full_2ep" not in {p["vs"] for p in result.paired}
