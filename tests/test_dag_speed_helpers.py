"""Planning a grid is O(cells) with per-cell work that is only hashing (issue 15: DAG construction close to a
bare Snakefile's): what cells share is computed once per plan, and the memoised cells are the cells the
unmemoised ``cell_config`` gives (the job recomputes a cell's hash with it)."""

import pytest

from adaptbench import grid as gridlib
from adaptbench import tasks
from adaptbench.results import config_hash
from adaptbench.tracks.finetune import grid as finetune_grid


def varied_grid(seeds=3):
    return {"grid": "t", "models": ["tiny-bert", {"name": "mini", "source": "minilm"}],
            "methods": ["full", {"name": "lora_r4", "method": "lora", "params": {"r": 4}, "train": {"lr": 1e-3},
                                 "task_params": {"syn_sts": {"r": 2}}, "task_train": {"syn_sts": {"epochs": 2}}},
                        "pissa"],
            "optimizers": ["adamw", {"name": "lion_fast", "optimizer": "lion", "train": {"lr": 1e-4}}],
            "tasks": ["syn_sentiment", "syn_sts", "syn_roles"], "seeds": list(range(seeds)),
            "train": {"epochs": 1, "max_length": 32}, "task_train": {"syn_roles": {"batch_size": 8}},
            "exclude": [{"adapter": "pissa", "optimizer": "lion_fast"}]}


def test_memoised_cells_are_the_cells_cell_config_gives():
    plan = gridlib.plan(varied_grid())
    assert len(plan.cells) == (3 * 2 - 1) * 2 * 3 * 3  # (methods × optimizers - excluded) × models × tasks × seeds
    for cell in plan.cells:
        fresh = finetune_grid.cell_config(method=cell.method, method_params=dict(cell.method_params),
                                          model=cell.model_source, task=cell.task, seed=cell.seed,
                                          train=dict(cell.train_params), data_dir=None)
        assert cell.config == fresh
        assert cell.key == config_hash(fresh) == config_hash(cell.config)
    assert len({c.key for c in plan.cells}) == len(plan.cells)


def test_task_files_are_read_once_per_task_not_per_cell(monkeypatch):
    calls = []
    real = tasks.get_task
    monkeypatch.setattr(tasks, "get_task", lambda name: calls.append(name) or real(name))
    plan = gridlib.plan(varied_grid(seeds=20))
    assert len(plan.cells) > 300
    assert len(calls) <= 3 * len(varied_grid()["tasks"])  # the plan's own lookups + the report and hub checks


def test_a_bad_training_setting_still_names_its_entry():
    cfg = varied_grid()
    cfg["methods"][1]["task_train"] = {"syn_sts": {"epochs": 0}}
    with pytest.raises(ValueError, match=r"method 'lora_r4-adamw', task 'syn_sts': train.epochs must be a positive"):
        gridlib.plan(cfg)


def test_duplicate_names_and_duplicate_cells_are_still_caught():
    same_cell = varied_grid()
    same_cell["methods"] = ["lora", {"name": "lora_again", "method": "lora"}]
    with pytest.raises(ValueError, match="compute the same cell"):
        gridlib.plan(same_cell)
    plan = gridlib.plan(varied_grid(seeds=1))
    plan.cells.append(plan.cells[0])
    with pytest.raises(ValueError, match="both named"):
        plan.check_distinct()
