"""A pretraining grid (kind: pretrain) → cells: optimizer entries × model sizes × corpora × seeds.

Torch-free. ``methods`` are optimizers (``adamw`` or registered optimizer methods, or
``{name, method, params, train}`` variants); ``models`` are sizes; ``tasks`` are corpora.
"""

from __future__ import annotations

from adaptbench import manifest
from adaptbench.grid import Cell, Plan, _excluded, _unknown, named_entries, optimizer_names
from adaptbench.results import folder_name
from adaptbench.tracks.pretrain.settings import MODEL_SIZES, PretrainConfig

TRACK = "pretrain"


def cell_config(*, optimizer: str, optimizer_params: dict, size: str, corpus: str, seed: int, train: dict,
                data_dir: str | None, tokenizer: str | None) -> dict:
    """Everything that decides what a pretraining cell computes (its hash names the cell)."""
    from adaptbench.tasks.corpora import get_corpus

    return {"track": TRACK, "method": optimizer, "method_params": manifest.resolve_params(optimizer, optimizer_params)
            if optimizer != "adamw" else {}, "model": size, "task": corpus, "task_version": get_corpus(corpus).version,
            "seed": seed, "train": PretrainConfig.from_dict(train).__dict__, "data": folder_name(data_dir),
            "tokenizer": tokenizer}


def plan(config: dict) -> Plan:
    from adaptbench.tasks.corpora import list_corpora

    entries = named_entries(config["methods"], "method", optimizer_names(), "optimizer")
    for size in config["models"]:
        if size not in MODEL_SIZES:
            raise _unknown("model size", size, list(MODEL_SIZES))
    for corpus in config["tasks"]:
        if corpus not in list_corpora():
            raise _unknown("corpus", corpus, list_corpora())
    cells = []
    for label, entry in entries.items():
        for size in config["models"]:
            for corpus in config["tasks"]:
                for seed in config["seeds"]:
                    if _excluded({"method": label, "model": size, "task": corpus, "seed": seed},
                                 config.get("exclude") or []):
                        continue
                    train = {**(config.get("train") or {}), **(entry.get("train") or {})}
                    params = dict(entry.get("params") or {})
                    if entry["method"] != "adamw":
                        manifest.check_params(entry["method"], params, f"grid: optimizer '{label}'")
                    cfg = cell_config(optimizer=entry["method"], optimizer_params=params, size=size, corpus=corpus,
                                      seed=int(seed), train=train, data_dir=config.get("data_dir"),
                                      tokenizer=config.get("tokenizer"))
                    cells.append(Cell(TRACK, label, entry["method"], size, size, corpus, int(seed), params, train, cfg))
    if not cells:
        raise ValueError("grid: no cells to run (everything excluded)")
    return Plan(cells, {})
