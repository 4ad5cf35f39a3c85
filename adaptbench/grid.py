"""A grid config → the cells Snakemake runs: the layer every track's expansion shares. Parse-time
safe: imports neither torch nor transformers. Each track (adaptbench/tracks/<kind>/) expands its own
axes; ``plan(config)`` picks the track by the grid's ``kind``.

Fine-tuning settings resolve in one direction, later wins:
  grid ``train`` → grid ``task_train[task]`` → method entry ``train`` → method entry ``task_train[task]``
Method hyperparameters: the paper's defaults (the method's config dataclass, applied by the job) →
the method entry's ``params`` → its ``task_params[task]`` (a paper's per-task values, e.g. KaSA's β, γ).
An optional ``optimizers`` axis crosses every method entry with every optimizer entry (label
``<method>-<optimizer>``, e.g. ``full-galore``); the optimizer entry's ``train`` settings come last. A method entry is a registry name, or ``{name, method, params, ...}``
for a variant (``{name: lora_r16, method: lora, params: {r: 16}}``).
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from adaptbench import manifest
from adaptbench.results import config_hash, folder_name

def method_files() -> dict[str, str]:
    """Registry name → family, torch-free (methods/manifest.json; registry names equal file stems)."""
    return {name: entry["family"] for name, entry in manifest.load().items()}


def data_driven_methods() -> set[str]:
    """Adapters whose class sets ``DATA_DRIVEN`` (EVA, CorDA): their cells get an init step."""
    return {name for name, entry in manifest.load().items() if entry["data_driven"]}


def _unknown(kind: str, name: str, valid) -> ValueError:
    close = difflib.get_close_matches(name, list(valid), n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return ValueError(f"grid: unknown {kind} '{name}'.{hint} Available: {', '.join(sorted(valid))}")


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def check_name(kind: str, name) -> str:
    """A name that becomes part of a path or a table key: no separators, no '.'/'..', no leading dot."""
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or name in (".", ".."):
        raise ValueError(f"grid: {kind} name {name!r} must start with a letter or digit and contain only "
                         "letters, digits and _ . + - (it names files)")
    return name


@dataclass(frozen=True)
class Cell:
    """One job of a grid. ``config`` is the full specification of what it computes; its hash (``key``)
    names the cell's folder, so two grids that contain the same cell share it. The readable names
    (``label``, ``model``, ``task``, ``seed``) go into the grid's index, not into the path."""

    track: str
    label: str
    method: str
    model: str  # readable name
    model_source: str  # what the job loads: alias, hub id or folder
    task: str
    seed: int
    method_params: dict
    train_params: dict
    config: dict = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        return config_hash(self.config)

    def index_entry(self) -> dict:
        return {"key": self.key, "track": self.track, "label": self.label, "method": self.method,
                "model": self.model, "task": self.task, "seed": self.seed}


@dataclass
class Plan:
    """A grid's cells, and what cannot run with the reason (reported, never substituted)."""

    cells: list
    unavailable: dict = field(default_factory=dict)

    def check_distinct(self) -> None:
        """Two entries of a grid that compute the same cell would share one folder: an error naming both."""
        seen = {}
        for c in self.cells:
            name = (c.label, c.model, c.task, c.seed)
            if name in seen.values():
                raise ValueError(f"grid: two cells are both named {name}; give the entries distinct names")
            if c.key in seen:
                raise ValueError(f"grid: entries {seen[c.key]} and {name} compute the same cell; drop one")
            seen[c.key] = name


def plan(config: dict) -> Plan:
    """The grid's cells, by its track's expansion (``kind``; default finetune)."""
    from adaptbench import tracks

    check_name("grid", config.get("grid"))
    result = tracks.get_track(config.get("kind", "finetune")).plan(config)
    result.check_distinct()
    return result


def index_json(plan_: Plan, grid: str, kind: str) -> str:
    """A grid's index: its cells by key with the grid's labels, and what could not run."""
    return as_json({"grid": grid, "kind": kind, "unavailable": plan_.unavailable,
                    "cells": [c.index_entry() for c in plan_.cells]})


def write_index(path, text: str) -> None:
    from adaptbench.results import atomic_write_text

    atomic_write_text(path, text + "\n")


def model_key(source: str) -> str:
    """How a cell's configuration names its model: alias or hub id as given, a local folder by its name."""
    if source.startswith(("/", ".", "~")) or Path(source).expanduser().is_dir():
        return folder_name(source)
    return source


def model_entries(config: dict) -> dict[str, str]:
    """Wildcard name → source. Entries are aliases/hub ids/paths or ``{name, source}``."""
    out = {}
    for entry in config["models"]:
        if isinstance(entry, dict):
            name, source = entry["name"], entry["source"]
        else:
            name, source = entry.replace("/", "--"), entry
        check_name("model", name)
        if name in out:
            raise ValueError(f"grid: model name '{name}' appears twice")
        out[name] = source
    return out


def named_entries(items, ref: str, known, kind: str) -> dict[str, dict]:
    """Grid entries by label: a registry name, or ``{name, <ref>, params, ...}`` for a variant whose
    ``<ref>`` (default: its name) must be in ``known``; labels must be distinct."""
    out = {}
    for entry in items:
        entry = {"name": entry, ref: entry} if isinstance(entry, str) else dict(entry)
        entry.setdefault(ref, entry["name"])
        check_name(f"{kind} entry", entry["name"])
        if entry[ref] not in known:
            raise _unknown(kind, entry[ref], known)
        if entry["name"] in out:
            raise ValueError(f"grid: {kind} entry '{entry['name']}' appears twice; give variants distinct names")
        out[entry["name"]] = entry
    return out


def optimizer_names() -> set[str]:
    return {n for n, fam in method_files().items() if fam == "optimizer"} | {"adamw"}


def method_entries(config: dict) -> dict[str, dict]:
    return named_entries(config["methods"], "method", method_files(), "method")


def optimizer_entries(config: dict) -> dict[str, dict]:
    """The optional optimizer axis: ``adamw`` or registered optimizer methods, or ``{name, optimizer,
    params, train, task_train}`` variants. Absent: one AdamW entry (each method entry's own
    ``train.optimizer`` still applies)."""
    if not config.get("optimizers"):
        return {"": {}}
    return named_entries(config["optimizers"], "optimizer", optimizer_names(), "optimizer")


def _excluded(cell: dict, rules: list[dict]) -> bool:
    """Whether ``cell`` matches an ``exclude`` rule; a rule naming a key the cell does not have is an error
    (a misspelt key would otherwise exclude nothing)."""
    for rule in rules:
        unknown = sorted(set(rule) - set(cell))
        if unknown:
            raise ValueError(f"grid: exclude rule {rule} has unknown key(s) {unknown}; valid: {sorted(cell)}")
    return any(all(cell.get(k) == v for k, v in rule.items()) for rule in rules)


_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")


def _typed(value):
    """'4' → 4, '1e-3' → 0.001, 'true' → True, 'null' → None; containers recursively."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    if not isinstance(value, str):
        return value
    if _INT.match(value):
        return int(value)
    if _FLOAT.match(value):
        return float(value)
    return {"true": True, "false": False, "null": None, "none": None}.get(value.lower(), value)


def typed_config(config: dict) -> dict:
    """Snakemake reads nested ``--config`` values as strings (YAML BaseLoader): ``seeds=[0,1]`` gives
    ['0', '1']. Give numbers, booleans and null back their types where a grid expects them; names
    (grid, models, tasks, method names) stay strings."""
    out = dict(config)
    for key in ("seeds", "train", "task_train", "resources", "data_dir"):
        if key in out:
            out[key] = _typed(out[key])
    for axis in ("methods", "optimizers"):
        if axis in out:
            out[axis] = [m if isinstance(m, str) else {**m, **{k: _typed(v) for k, v in m.items() if k != "name"}}
                         for m in out[axis]]
    return out


def as_json(obj) -> str:
    """Compact, key-sorted JSON: a stable params string, so Snakemake reruns a cell when it changes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


