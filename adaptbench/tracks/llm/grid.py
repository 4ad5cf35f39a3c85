"""An LLM grid (kind: llm) → cells: method entries (× optimizers) × causal LMs × training sets × seeds,
plus a zero-shot row per model (``zero_shot: true``: the base model scored without training).

Torch-free. Training settings resolve as in the fine-tuning track; ``eval`` holds lm-eval's settings
(tasks, limit, num_fewshot, batch size, bootstrap_iters, max_gen_toks), shared by every cell.
"""

from __future__ import annotations

from pathlib import Path

from adaptbench import manifest
from adaptbench.config import TrainConfig
from adaptbench.grid import Cell, Plan, model_entries, model_key
from adaptbench.results import folder_name
from adaptbench.tracks.finetune.grid import expand_entries
from adaptbench.tracks.llm import lmeval, sets

TRACK = "llm"
ZERO_SHOT = "zero_shot"  # not a registry method: the base model, no training
EVAL_DEFAULTS = {"tasks": ["syn_category"], "limit": None, "task_limit": {}, "num_fewshot": {}, "batch_size": 16,
                 "bootstrap_iters": 100, "max_gen_toks": 256}


EVAL_WHEN_USED = ("include_path", "user_tasks")  # absent unless a grid uses them: stored cells keep their hashes


def eval_settings(config: dict) -> dict:
    settings = {**EVAL_DEFAULTS, **(config.get("eval") or {})}
    unknown = sorted(set(settings) - set(EVAL_DEFAULTS) - set(EVAL_WHEN_USED))
    if unknown:
        raise ValueError(f"grid: eval has unknown key(s) {unknown}; valid: {sorted(EVAL_DEFAULTS)}")
    return settings


def user_task_versions(tasks: list[str]) -> dict:
    """The researcher's lm-eval tasks among ``tasks`` (eval.include_path) → their content digests: the cell's
    evaluation names the version, never the folder (no absolute paths in a record)."""
    found = lmeval.user_tasks()
    return {t: lmeval.user_task_digest(found[t]) for t in tasks if t in found}


def train_config(train: dict | None) -> TrainConfig:
    """The LLM track's training settings: its loader batches at random (no length grouping yet), so
    ``group_by_length`` defaults to false here and true is refused in one line."""
    cfg = TrainConfig.from_dict(train, defaults={"group_by_length": False})
    if cfg.group_by_length:
        raise ValueError("train.group_by_length: the LLM track batches at random; leave it out or set it false")
    return cfg


def cell_config(*, method: str, method_params: dict, model: str, task: str, seed: int, train: dict,
                data_dir: str | None, evaluation: dict) -> dict:
    """Everything that decides what an LLM cell computes (its hash names the cell)."""
    return {"track": TRACK, "method": method,
            "method_params": manifest.resolve_params(method, method_params) if method != ZERO_SHOT else {},
            "model": model_key(model), "task": task, "seed": seed, "train": train_config(train).semantic(),
            "data": folder_name(data_dir), "eval": evaluation}


def plan(config: dict) -> Plan:
    data_dir = config.get("data_dir")
    if data_dir is not None and not Path(data_dir).is_dir():
        raise ValueError(f"grid: data_dir {data_dir} is not a folder (the ../shared/data layout)")
    evaluation = eval_settings(config)
    if evaluation.get("include_path"):
        lmeval.use_include_path(evaluation["include_path"])
    evaluation.pop("include_path", None)
    for task in config["tasks"]:
        if task not in sets.TRAIN_SETS:
            raise ValueError(f"grid: unknown training set '{task}'. Available: {', '.join(sets.TRAIN_SETS)}")
    unavailable = {t: r for t in config["tasks"] if (r := sets.unavailable_reason(t, data_dir))}
    missing_eval = {t: r for t in evaluation["tasks"] if (r := lmeval.unavailable_reason(t, data_dir))}
    for task, reason in missing_eval.items():
        if reason.startswith("unknown"):
            raise ValueError(f"grid: eval.tasks: {reason}")
    evaluation = {**evaluation, "tasks": [t for t in evaluation["tasks"] if t not in missing_eval]}
    if versions := user_task_versions(evaluation["tasks"]):
        evaluation["user_tasks"] = versions
    unavailable.update({f"eval:{t}": r for t, r in missing_eval.items()})
    if not evaluation["tasks"]:  # nothing can be scored here: no cells, and the report says why
        return Plan([], unavailable)
    make = lambda **kw: cell_config(**kw, data_dir=data_dir, evaluation=evaluation)  # noqa: E731
    cells = expand_entries(config, unavailable, make, TRACK)
    if config.get("zero_shot"):
        train = dict(config.get("train") or {})
        for model, source in model_entries(config).items():
            seed = int(config["seeds"][0])  # greedy decoding and fixed lm-eval seeds: one cell says it all
            task = next((t for t in config["tasks"] if t not in unavailable), config["tasks"][0])
            cells.append(Cell(TRACK, "zero-shot", ZERO_SHOT, model, source, task, seed, {}, train,
                              make(method=ZERO_SHOT, method_params={}, model=source, task=task, seed=seed,
                                   train=train)))
    if not cells:
        raise ValueError("grid: no cells to run (every training set unavailable or excluded)")
    return Plan(cells, unavailable)
