import re
import subprocess
import sys

import pytest
import yaml

from adaptbench import grid as gridlib


def plan_of(cfg):
    plan = gridlib.plan(cfg)
    return plan.cells, plan.unavailable


def pretrain_cells(cfg):
    return gridlib.plan(cfg).cells


def base(**kw):
    cfg = {"grid": "t", "methods": ["full", "lora"], "models": ["tiny-bert"], "tasks": ["syn_sentiment", "syn_sts"],
           "seeds": [0, 1], "train": {"epochs": 1}}
    cfg.update(kw)
    return cfg


def test_expands_the_product():
    cells, unavailable = plan_of(base())
    assert len(cells) == 2 * 1 * 2 * 2 and not unavailable
    assert {c.label for c in cells} == {"full", "lora"}


def test_settings_resolve_grid_then_task_then_method_then_method_task():
    cfg = base(methods=[{"name": "lora_r4", "method": "lora", "params": {"r": 4}, "train": {"lr": 1e-3},
                         "task_train": {"syn_sts": {"lr": 5e-4, "epochs": 7}}}],
               task_train={"syn_sts": {"epochs": 5, "batch_size": 8}}, seeds=[0])
    cells = {c.task: c for c in plan_of(cfg)[0]}
    assert cells["syn_sentiment"].train_params == {"epochs": 1, "lr": 1e-3}
    assert cells["syn_sts"].train_params == {"epochs": 7, "batch_size": 8, "lr": 5e-4}
    assert cells["syn_sts"].method == "lora" and cells["syn_sts"].label == "lora_r4"
    assert cells["syn_sts"].method_params == {"r": 4}


def test_exclude_skips_matching_cells():
    cells, _ = plan_of(base(exclude=[{"method": "lora", "task": "syn_sts"}]))
    assert not [c for c in cells if c.label == "lora" and c.task == "syn_sts"]
    assert len(cells) == 6


def test_unknown_names_fail_at_parse_time_with_suggestions():
    with pytest.raises(ValueError, match=r"unknown adapter method 'loar'\. Did you mean: lora\b"):
        plan_of(base(methods=["loar"]))
    with pytest.raises(ValueError, match=r"unknown task 'syn_sentimnt'"):
        plan_of(base(tasks=["syn_sentimnt"]))


def test_missing_task_data_is_reported_not_substituted(tmp_path):
    cells, unavailable = plan_of(base(tasks=["sst2", "syn_sentiment"], data_dir=str(tmp_path)))
    assert set(unavailable) == {"sst2"} and "SST-2/train.tsv" in unavailable["sst2"]
    assert {c.task for c in cells} == {"syn_sentiment"}


def test_a_data_dir_that_does_not_exist_is_named():
    with pytest.raises(ValueError, match=r"grid: data_dir /no/such/glue is not a folder"):
        plan_of(base(data_dir="/no/such/glue"))


def test_hub_ids_become_wildcard_safe_names(tmp_path):
    models = gridlib.model_entries(base(models=["FacebookAI/roberta-base", {"name": "mine", "source": str(tmp_path)}]))
    assert models == {"FacebookAI--roberta-base": "FacebookAI/roberta-base", "mine": str(tmp_path)}


@pytest.mark.parametrize("source, message", [
    ("minilmm", "unknown model 'minilmm'. Did you mean: minilm?"),
    ("tiny_bert", "unknown model 'tiny_bert'. Did you mean: tiny-bert"),
    ("/no/such/model", "model folder /no/such/model not found"),
])
def test_a_typod_model_alias_or_missing_folder_fails_at_dag_build(source, message):
    """Before: a typo'd alias planned every job and each failed after a hub lookup (issue 14, item 10)."""
    with pytest.raises(ValueError, match=re.escape(message)):
        gridlib.plan(base(models=[source]))


def test_hub_ids_and_bare_hub_names_still_plan():
    assert gridlib.plan(base(models=["bert-base-uncased", "org/some-model"], seeds=[0])).cells


def test_report_settings_name_what_exists():
    with pytest.raises(ValueError, match="no claims file for paper 'lorra'. Did you mean: lora"):
        gridlib.plan(base(report={"claims": "lorra"}))
    with pytest.raises(ValueError, match="task 'syn_sts' has no metric 'acc'"):
        gridlib.plan(base(report={"metrics": {"syn_sts": "acc"}}))
    plan = gridlib.plan(base(report={"metrics": {"sst2": "acc"}}))  # another task of the paper: a warning
    assert plan.warnings == ["report.metrics names task 'sst2', which is not in this grid's tasks"]


def test_unknown_adapter_suggests_adapters_only():
    with pytest.raises(ValueError) as e:
        plan_of(base(methods=["lio"]))
    assert "lion" not in str(e.value).split("Available:")[0] and "tent" not in str(e.value)


@pytest.mark.parametrize("grid, message", [
    ({"seed": [0]}, "g.yaml:6: unknown key 'seed'; did you mean 'seeds'?"),
    ({"train": {"epochs": 0}}, "g.yaml:6: train/epochs: 0 is not valid; expected >= 1"),
    ({"methods": ["full", {"name": "x", "method": "lora", "param": {"r": 4}}]},
     "g.yaml:6: unknown key 'param' in methods/1; did you mean 'params'?"),
    ({"kind": "finetun"}, "g.yaml:7: kind 'finetun' is not a track. Did you mean 'finetune'?"),
])
def test_schema_errors_are_one_line_naming_file_line_and_key(tmp_path, monkeypatch, grid, message):
    cfg = base(seeds=[0])
    if "seed" in grid:
        cfg.pop("seeds")
    cfg.update(grid)
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as e:
        gridlib.load_plan(yaml.safe_load(path.read_text()), [path])
    assert str(e.value).startswith(message) and "\n" not in str(e.value), str(e.value)


def test_a_config_override_is_named_as_such():
    with pytest.raises(ValueError, match=r"^--config seeds: seeds/0: -1 is not valid; expected >= 0$"):
        gridlib.load_plan(base(seeds=["-1"]), [], {"seeds": "[-1]"})


def test_grid_logic_imports_no_torch():
    code = ("import sys; from adaptbench import grid; grid.plan({'grid':'t','methods':['lora'],'models':['minilm'],"
            "'tasks':['sst2'],'seeds':[0]}); assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def expand_any(cfg):
    return gridlib.plan(cfg).cells


def test_every_shipped_grid_expands(repo):
    for path in sorted((repo / "workflows" / "grids").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        # a grid whose data is all absent here (CIFAR-10-C, a hub-only LLM set) has no cells, only its report
        result = gridlib.plan(cfg)
        assert result.cells or result.unavailable, path.name


def test_task_params_override_params_for_one_task():
    cfg = base(methods=[{"name": "lora", "params": {"r": 4, "alpha": 8},
                         "task_params": {"syn_sts": {"alpha": 16}}}], seeds=[0])
    cells = {c.task: c for c in plan_of(cfg)[0]}
    assert cells["syn_sentiment"].method_params == {"r": 4, "alpha": 8}
    assert cells["syn_sts"].method_params == {"r": 4, "alpha": 16}


def test_data_driven_manifest_agrees_with_the_registry():
    from adaptbench import registry

    truth = {n for n in registry.available("adapter") if registry.get_method(n).cls.DATA_DRIVEN}
    assert gridlib.data_driven_methods() == truth


def test_tta_grid_expands_and_names_bad_entries():
    from adaptbench.tta import grid as ttagrid

    cfg = {"grid": "t", "kind": "tta", "methods": ["source", {"name": "src2", "method": "source"}],
           "sources": [{"name": "cnn", "kind": "image", "arch": "cnn_bn"}],
           "scenarios": [{"name": "ep"}, {"name": "co", "mode": "continual"}], "seeds": [0, 1],
           "exclude": [{"method": "src2", "scenario": "co"}]}
    cells = ttagrid.expand(cfg)
    assert len(cells) == 2 * 2 * 2 - 2
    with pytest.raises(ValueError, match="unknown TTA method 'lora'"):
        ttagrid.expand({**cfg, "methods": ["lora"]})
    with pytest.raises(ValueError, match="arch must be one of"):
        ttagrid.expand({**cfg, "sources": [{"name": "x", "arch": "resnet"}]})
    with pytest.raises(ValueError, match="needs a sentence task"):
        ttagrid.expand({**cfg, "sources": [{"name": "x", "kind": "text"}]})


def test_optimizer_axis_crosses_methods_and_labels_cells():
    cfg = base(methods=["full", "lora"], tasks=["syn_sentiment"], seeds=[0], train={"epochs": 1, "lr": 1e-4},
               optimizers=["adamw", {"name": "lion", "params": {"beta1": 0.95}, "train": {"lr": 1e-5}}],
               exclude=[{"adapter": "lora", "optimizer": "adamw"}])
    cells = {c.label: c for c in plan_of(cfg)[0]}
    assert set(cells) == {"full-adamw", "full-lion", "lora-lion"}
    assert cells["full-lion"].train_params == {"epochs": 1, "lr": 1e-5, "optimizer": "lion",
                                               "optimizer_params": {"beta1": 0.95}}
    assert cells["full-adamw"].train_params["optimizer"] == "adamw"
    assert cells["lora-lion"].method == "lora"
    with pytest.raises(ValueError, match="unknown optimizer 'lio'. Did you mean: lion"):
        plan_of(base(optimizers=["lio"]))


def test_pretrain_grid_expands_and_names_bad_entries():
    cfg = {"grid": "p", "kind": "pretrain", "methods": ["adamw", {"name": "g", "method": "galore", "params": {"rank": 4}}],
           "models": ["llama_tiny"], "tasks": ["syn_text"], "seeds": [0, 1], "train": {"steps": 5}}
    cells = pretrain_cells(cfg)
    assert len(cells) == 4 and {c.method for c in cells} == {"adamw", "galore"}
    assert next(c for c in cells if c.label == "g").method_params == {"rank": 4}
    with pytest.raises(ValueError, match="unknown optimizer 'lora'"):
        pretrain_cells({**cfg, "methods": ["lora"]})
    with pytest.raises(ValueError, match="unknown model size 'llama_7b'"):
        pretrain_cells({**cfg, "models": ["llama_7b"]})
    with pytest.raises(ValueError, match="unknown corpus 'wiki'"):
        pretrain_cells({**cfg, "tasks": ["wiki"]})


def test_the_job_is_told_the_resolved_settings_so_equal_cells_get_equal_params():
    """Two spellings of one cell (a default pinned or not, a setting in the grid or in the entry) give the
    job the same --train-params, so Snakemake's params trigger reruns nothing; and the job recomputes the
    cell's hash from them."""
    from adaptbench import grid as gridlib
    from adaptbench.config import TrainConfig
    from adaptbench.tracks.finetune.grid import cell_config, semantic_train

    base = {"grid": "a", "methods": ["lora"], "models": ["tiny-bert"], "tasks": ["syn_sentiment"], "seeds": [0],
            "train": {"epochs": 1, "lr": 1e-3}}
    pinned = {**base, "methods": [{"name": "lora", "train": {"lr": 1e-3, "group_by_length": True, "weight_decay": 0.0}}],
              "train": {"epochs": 1}}
    a, b = gridlib.plan(base).cells[0], gridlib.plan(pinned).cells[0]
    assert a.key == b.key and semantic_train(a) == semantic_train(b)
    random_batches = gridlib.plan({**base, "train": {**base["train"], "group_by_length": False}}).cells[0]
    assert semantic_train(random_batches)["group_by_length"] is False  # spelled out: the job's default is true
    job_side = cell_config(method="lora", method_params={}, model="tiny-bert", task="syn_sentiment", seed=0,
                           train=TrainConfig.from_dict(semantic_train(random_batches)).to_dict(), data_dir=None)
    from adaptbench.results import config_hash
    assert config_hash(job_side) == random_batches.key
