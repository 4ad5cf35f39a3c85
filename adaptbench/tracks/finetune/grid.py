"""A fine-tuning grid → cells: method entries (× the optional optimizer axis) × models × tasks × seeds.

Torch-free. Settings resolve in one direction, later wins: grid ``train`` → ``task_train[task]`` →
method entry ``train`` → its ``task_train[task]`` → optimizer entry ``train`` → its ``task_train[task]``.
Method hyperparameters: the paper's defaults (methods/manifest.json, from the method's config dataclass)
→ the entry's ``params`` → its ``task_params[task]``. A cell is named by the hash of ``cell_config``,
which the job recomputes from the same inputs (tests check that the two agree).
"""

from __future__ import annotations

import json
from pathlib import Path

from adaptbench import manifest, tasks
from adaptbench.config import SINCE_STORED, TrainConfig
from adaptbench.grid import (Cell, Plan, _excluded, _unknown, data_driven_methods, method_entries, model_entries,
                             model_key, optimizer_entries)
from adaptbench.results import config_hash, folder_name

TRACK = "finetune"
# What the init step of a data-driven adapter reads: a new lr or epoch count reuses its cached init.
INIT_DATA_KEYS = ("batch_size", "max_length", "max_train_samples", "subset_seed")


def cell_config(*, method: str, method_params: dict, model: str, task: str, seed: int, train: dict,
                data_dir: str | None, memo: dict | None = None) -> dict:
    """Everything that decides what a fine-tuning cell computes (its hash names the cell).

    ``memo``: a dict kept across the cells of one plan, so that what many cells share (the resolved
    hyperparameters of a method entry, a task's version, the validated training settings, the model and
    data names) is computed once per distinct value, not once per cell. Cells then share those values:
    a cell's ``config`` is read, never modified."""
    if memo is None:
        return {"track": TRACK, "method": method, "method_params": manifest.resolve_params(method, method_params),
                "model": model_key(model), "task": task, "task_version": tasks.get_task(task).version, "seed": seed,
                "train": TrainConfig.from_dict(train).semantic(), "data": folder_name(data_dir)}
    return {"track": TRACK, "method": method,
            "method_params": _memo_of(memo, ("params", method), method_params,
                                      lambda: manifest.resolve_params(method, method_params)),
            "model": _memo(memo, ("model", model), lambda: model_key(model)), "task": task,
            "task_version": _memo(memo, ("task", task), lambda: tasks.get_task(task).version), "seed": seed,
            "train": _memo_of(memo, ("train",), train, lambda: TrainConfig.from_dict(train).semantic()),
            "data": _memo(memo, ("data", data_dir), lambda: folder_name(data_dir))}


def _key(value) -> str:
    """A memo key for a grid value (YAML scalars, lists, mappings): equal keys, equal values and types
    (JSON tells 1, 1.0, true and "1" apart)."""
    return json.dumps(value, sort_keys=True, default=repr)


def _memo(memo: dict, key, compute):
    try:
        return memo[key]
    except KeyError:
        memo[key] = value = compute()
        return value


def _memo_of(memo: dict, tag: tuple, value, compute):
    """``_memo`` keyed by a mapping's content; the same object again (the cells of one entry and task
    share it) is found by identity without serialising it. The memo holds the object, so its id is not
    reused while the memo lives."""
    hit = memo.get(tag + (id(value),))
    if hit is not None and hit[0] is value:
        return hit[1]
    result = _memo(memo, tag + (_key(value),), compute)
    memo[tag + (id(value),)] = (value, result)
    return result


def init_config(cell: Cell, data_dir: str | None) -> dict:
    """What a data-driven init depends on: method, model, task, seed and the batches it sees."""
    train = TrainConfig.from_dict(cell.train_params).to_dict()
    return {"init": cell.method, "method_params": manifest.resolve_params(cell.method, cell.method_params),
            "model": model_key(cell.model_source), "task": cell.task, "seed": cell.seed,
            "data": folder_name(data_dir), "batches": {k: train[k] for k in INIT_DATA_KEYS}}


def init_key(cell: Cell, data_dir: str | None, data_driven: set | None = None) -> str | None:
    data_driven = data_driven_methods() if data_driven is None else data_driven
    return config_hash(init_config(cell, data_dir)) if cell.method in data_driven else None


def init_index(cells, data_dir: str | None) -> tuple[dict, dict]:
    """Init key → a cell that needs it (data-driven adapters share an init across training settings),
    and cell key → its init key."""
    inits, init_of = {}, {}
    data_driven = data_driven_methods()
    for cell in cells:
        key = init_key(cell, data_dir, data_driven)
        if key:
            inits.setdefault(key, cell)
            init_of[cell.key] = key
    return inits, init_of


def init_batches(cell: Cell) -> dict:
    """The training settings an init step reads (so a new lr or epoch count reuses the cached init)."""
    return {k: cell.train_params[k] for k in INIT_DATA_KEYS if k in cell.train_params}


def semantic_train(cell: Cell) -> dict:
    """What the job is told to train with: the cell's resolved settings, the ones its hash covers, with the
    ``SINCE_STORED`` values the hash leaves out spelled back in (run control goes through resources). The
    same for every grid that names the same cell, so pinning a default or moving a setting between the grid
    and an entry changes no job's params and Snakemake reruns nothing."""
    return {**SINCE_STORED, **cell.config["train"]}


def plan(config: dict) -> Plan:
    """All cells of the grid, and the tasks that cannot run with their reasons (never substituted)."""
    known = tasks.list_tasks()
    for task in config["tasks"]:
        if task not in known:
            raise _unknown("task", task, known)
    for task in config.get("task_train") or {}:
        if task not in config["tasks"]:
            raise ValueError(f"grid: task_train names task '{task}', which is not in the grid's tasks {config['tasks']}")
    data_dir = config.get("data_dir")
    if data_dir is not None and not Path(data_dir).is_dir():
        raise ValueError(f"grid: data_dir {data_dir} is not a folder (give a GLUE-format folder, or null for the hub)")
    unavailable = {}
    for task in config["tasks"]:
        reason = tasks.unavailable_reason(tasks.get_task(task), data_dir)
        if reason:
            unavailable[task] = reason
    memo = {}  # what the cells share, computed once (cell_config)
    cells = expand_entries(config, unavailable, lambda **kw: cell_config(**kw, data_dir=data_dir, memo=memo), TRACK)
    if not cells and not unavailable:
        raise ValueError("grid: no cells to run (everything excluded)")
    return Plan(cells, unavailable, inits=init_index(cells, data_dir)[1])


def expand_entries(config: dict, unavailable: dict, make_config, track: str, zero_shot: str | None = None) -> list[Cell]:
    """Method entries (× the optional optimizer axis) × models × tasks × seeds, with settings resolved in
    the documented order; ``make_config(method=, method_params=, model=, task=, seed=, train=)`` gives a
    cell's configuration (shared by every track that adapts a pretrained model: finetune, llm).
    ``zero_shot`` names a pseudo-method (no training) the track accepts beside the adapters."""
    methods, models = method_entries(config), model_entries(config)
    for entry in methods.values():
        if entry["method"] != zero_shot and manifest.load()[entry["method"]]["family"] != "adapter":
            raise manifest.unknown_method(entry["method"], "adapter", "grid: methods")
    optimizers = optimizer_entries(config)
    cells = []
    exclude = config.get("exclude") or []
    for (method_label, entry), (opt_label, opt) in ((m, o) for m in methods.items() for o in optimizers.items()):
        label = f"{method_label}-{opt_label}" if opt_label else method_label  # e.g. full-galore, lora-lion
        settings = {}  # task → (method params, train settings): the same for every model and seed
        for model, source in models.items():
            for task in config["tasks"]:
                if task in unavailable:
                    continue
                for seed in config["seeds"]:
                    if exclude and _excluded({"method": label, "model": model, "task": task, "seed": seed,
                                              "adapter": method_label, "optimizer": opt_label or "adamw"}, exclude):
                        continue
                    if task not in settings:  # checked at the first cell that uses them, as before
                        settings[task] = _entry_settings(config, entry, opt, task, method_label, opt_label)
                    params, train = settings[task]
                    try:
                        config_ = make_config(method=entry["method"], method_params=params, model=source, task=task,
                                              seed=int(seed), train=train)
                    except ValueError as e:  # a bad training setting: name the entry it came from
                        raise ValueError(f"grid: method '{label}', task '{task}': {e}") from None
                    cells.append(Cell(track, label, entry["method"], model, source, task, int(seed), params, train,
                                      config_))
    return cells


def _entry_settings(config: dict, entry: dict, opt: dict, task: str, method_label: str, opt_label: str):
    """A method entry's (× optimizer entry's) hyperparameters and training settings for one task, checked.
    Every cell of the entry and task shares the two dicts (read, never modified)."""
    train = {**(config.get("train") or {}), **(config.get("task_train") or {}).get(task, {}),
             **(entry.get("train") or {}), **(entry.get("task_train") or {}).get(task, {}),
             **(opt.get("train") or {}), **(opt.get("task_train") or {}).get(task, {})}
    if opt:
        train["optimizer"] = opt["optimizer"]
        train["optimizer_params"] = dict(opt.get("params") or {})
        manifest.check_params(opt["optimizer"], train["optimizer_params"], f"grid: optimizer '{opt_label}'")
    params = {**(entry.get("params") or {}), **(entry.get("task_params") or {}).get(task, {})}
    manifest.check_params(entry["method"], params, f"grid: method '{method_label}'")
    return params, train
