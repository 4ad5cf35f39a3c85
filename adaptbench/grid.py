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
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
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

    @cached_property  # hashed once per cell (the Snakefile, the index and the init step all ask for it)
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
    warnings: list = field(default_factory=list)  # harmless but probably unintended settings, printed once
    inits: dict = field(default_factory=dict)  # cell key → key of the data-driven init it needs (results/inits/)

    def check_distinct(self) -> None:
        """Two entries of a grid that compute the same cell would share one folder: an error naming both."""
        seen, names = {}, set()
        for c in self.cells:
            name = (c.label, c.model, c.task, c.seed)
            if name in names:
                raise ValueError(f"grid: two cells are both named {name}; give the entries distinct names")
            if c.key in seen:
                raise ValueError(f"grid: entries {seen[c.key]} and {name} compute the same cell; drop one")
            seen[c.key] = name
            names.add(name)


def plan(config: dict) -> Plan:
    """The grid's cells, by its track's expansion (``kind``; default finetune)."""
    from adaptbench import tracks

    check_name("grid", config.get("grid"))
    if config.get("methods_path"):  # the researcher's method files, known torch-free and hashed as the jobs will
        from adaptbench.user_methods import add_to_manifest

        add_to_manifest(config["methods_path"])
    if config.get("task_dirs"):  # the researcher's task YAMLs: known here and in every job this run starts
        from adaptbench.tasks import use_task_dirs

        use_task_dirs(config["task_dirs"])
    result = tracks.get_track(config.get("kind", "finetune")).plan(config)
    result.check_distinct()
    optimizers = optimizer_names()
    for c in result.cells:  # train.optimizer (grid, task or method entry): a typo fails here, not in every job
        name = (c.train_params or {}).get("optimizer")
        if isinstance(name, str) and name not in optimizers:
            raise _unknown("train.optimizer", name, optimizers)
    result.warnings.extend(check_report(config) + check_hub(config))
    return result


def check_hub(config: dict) -> list[str]:
    """A fine-tuning grid without ``data_dir`` reads GLUE from the hub; offline, every such job would fail
    after its lookup. Only a warning: the hub cache may hold the data, and a cluster grid is often planned
    on a machine other than the one that runs it."""
    from adaptbench import tasks

    offline = any(os.environ.get(v) == "1" for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    if config.get("kind", "finetune") != "finetune" or config.get("data_dir") is not None or not offline:
        return []
    known = set(tasks.list_tasks())
    hub = [t for t in config.get("tasks", []) if t in known and not tasks.get_task(t).is_synthetic]
    return [f"no data_dir and the hub is offline (HF_HUB_OFFLINE=1): tasks {hub} will fail unless cached; "
            "pass --config data_dir=<GLUE folder>"] if hub else []


def check_report(config: dict) -> list[str]:
    """The report settings name what exists: ``report.claims`` papers with a readable claims file, and
    ``report.metrics`` tasks of the grid with a metric the task computes (a wrong one used to fall back
    to the task's main metric in silence)."""
    from adaptbench import claims, tasks

    report = config.get("report") or {}
    named = report.get("claims")
    claims.check_papers([named] if isinstance(named, str) else list(named or []))
    known, warnings = set(tasks.list_tasks()), []
    for task, metric in (report.get("metrics") or {}).items():
        if task not in config.get("tasks", []):  # harmless: grids of one paper share one metrics map
            warnings.append(f"report.metrics names task '{task}', which is not in this grid's tasks")
        elif task in known and metric not in tasks.get_task(task).metrics:
            raise ValueError(f"grid: report.metrics: task '{task}' has no metric '{metric}'; "
                             f"it has {list(tasks.get_task(task).metrics)}")
    return warnings


def index_json(plan_: Plan, grid: str, kind: str) -> str:
    """A grid's index: its cells by key with the grid's labels, and what could not run."""
    return as_json({"grid": grid, "kind": kind, "unavailable": plan_.unavailable,
                    "cells": [{**c.index_entry(), **({"init": plan_.inits[c.key]} if c.key in plan_.inits else {})}
                              for c in plan_.cells]})


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
        if config.get("kind", "finetune") == "finetune":  # the encoder aliases; other tracks check their own
            check_model_source(source)
        check_name("model", name)
        if name in out:
            raise ValueError(f"grid: model name '{name}' appears twice")
        out[name] = source
    return out


def check_model_source(source) -> None:
    """Cheap checks of what a model entry loads: an alias, an existing folder, or a hub id. A bare name
    close to an alias is a typo (``minilmm``), not a hub id; a path that is not a folder is missing."""
    from adaptbench.models import MODEL_ALIASES  # torch-free at import

    if not isinstance(source, str) or not source:
        raise ValueError(f"grid: model {source!r} must be an alias ({', '.join(MODEL_ALIASES)}), a hub id or a folder")
    if source in MODEL_ALIASES:
        return
    path = Path(source).expanduser()
    if source.startswith(("/", ".", "~")):
        if not path.is_dir():
            raise ValueError(f"grid: model folder {source} not found (give an existing folder, an alias or a hub id)")
        return
    if "/" not in source and not path.is_dir():
        close = difflib.get_close_matches(source, list(MODEL_ALIASES), n=2, cutoff=0.75)
        if close:
            raise ValueError(f"grid: unknown model '{source}'. Did you mean: {', '.join(close)}? Aliases: "
                             f"{', '.join(MODEL_ALIASES)}; anything else is read as a hub id (org/name) or a folder")


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


def method_entries(config: dict, family: str = "adapter") -> dict[str, dict]:
    """A fine-tuning grid's method entries: registered methods of ``family`` (suggestions come from it
    alone, never from the optimizers or TTA methods)."""
    known = {n for n, fam in method_files().items() if fam == family}
    return named_entries(config["methods"], "method", known, f"{family} method")


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
    # YAML's own spellings only: 'none' is a word a setting may mean (train.keep_checkpoint: none)
    return {"true": True, "false": False, "null": None, "~": None}.get(value.lower(), value)


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


# ---- the grid as the Snakefile reads it: one line per mistake ------------------------------------

USER_ERRORS = (ValueError, KeyError, TypeError, FileNotFoundError)


class GridSource:
    """Where each setting of a grid came from: the ``--configfile`` YAMLs (later ones override earlier
    ones, key by key) or ``--config`` on the command line. Names the file and line of a bad setting."""

    def __init__(self, configfiles=(), overrides: dict | None = None):
        self.files = [Path(f) for f in configfiles]
        self.overrides = dict(overrides or {})

    def name(self) -> str:
        files = " + ".join(_short(f) for f in self.files) or "the grid"
        return files + (" with --config " + ", ".join(sorted(self.overrides)) if self.overrides else "")

    def where(self, path=()) -> str:
        """``file:line`` of a setting (a key path such as ('methods', 1, 'params')), or ``--config key``."""
        path = tuple(path)
        if path and path[0] in self.overrides:
            return f"--config {path[0]}"
        for f in reversed(self.files):
            line = yaml_line(f, path)
            if line is not None:
                return f"{_short(f)}:{line}"
        return self.name()


def _short(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _repo_path(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(__file__).resolve().parents[1]))
    except ValueError:
        return str(path)


def yaml_line(path: Path, keys) -> int | None:
    """1-based line of the node at ``keys`` in a YAML file (the deepest that exists), or None when the
    file does not hold its first key."""
    import yaml

    try:
        node = yaml.compose(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    line, found = None, False
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            hit = next(((k, v) for k, v in node.value if k.value == str(key)), None)
            if hit is None:
                break
            line, node = hit[0].start_mark.line + 1, hit[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
        found = True
    return line if found else None


def _brief(value, limit: int = 60) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _schema_line(error, source: GridSource, schema_name: str) -> str:
    """One jsonschema error as one line: where (file:line or --config key), which key, what to do."""
    path = list(error.absolute_path)
    at = "/".join(map(str, path))
    where = source.where(path)
    kind = error.validator
    if kind == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        key = extra[0] if extra else "?"
        where = source.where(path + [key])
        close = difflib.get_close_matches(key, allowed, n=1)
        fix = f"did you mean '{close[0]}'?" if close else "remove it"
        return (f"{where}: unknown key '{key}'" + (f" in {at}" if at else "") + f"; {fix} "
                f"(valid keys: {', '.join(allowed)})")
    if kind == "required":
        missing = re.findall(r"'([^']+)' is a required property", error.message)
        key = missing[0] if missing else error.message
        desc = error.schema.get("properties", {}).get(key, {}).get("description")
        return (f"{where}: missing required key '{key}'" + (f" in {at}" if at else "")
                + (f" ({desc})" if desc else "") + f"; add it (see {schema_name})")
    if kind in ("type", "minItems", "minimum", "maximum", "exclusiveMinimum", "enum", "const", "pattern"):
        expected = {"type": f"expected {error.validator_value}", "minItems": f"expected at least {error.validator_value} item(s)",
                    "minimum": f"expected >= {error.validator_value}", "maximum": f"expected <= {error.validator_value}",
                    "exclusiveMinimum": f"expected > {error.validator_value}",
                    "enum": f"expected one of {error.validator_value}", "const": f"expected {error.validator_value!r}",
                    "pattern": "expected letters, digits and _ . - only (it names files)"}[kind]
        return f"{where}: {at or 'grid'}: {_brief(error.instance)} is not valid; {expected}"
    return f"{where}: {at or 'grid'}: {_brief(error.message, 160)} (schema: {schema_name})"


def validate_schema(config: dict, schema_path: str | Path, source: GridSource | None = None) -> None:
    """The grid against its track's JSON schema, defaults filled in as Snakemake's ``validate`` does;
    the most relevant error as one line (never the schema itself)."""
    import jsonschema
    import yaml
    from jsonschema import validators

    source = source or GridSource()
    schema = yaml.safe_load(Path(schema_path).read_text())
    base = validators.validator_for(schema)
    check_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema_):
        for name, sub in properties.items():
            if "default" in sub and isinstance(instance, dict):
                instance.setdefault(name, sub["default"])
        yield from check_properties(validator, properties, instance, schema_)

    validator = validators.extend(base, {"properties": set_defaults})(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        raise ValueError(_schema_line(error, source, _repo_path(Path(schema_path))))


def load_plan(config: dict, configfiles=(), overrides: dict | None = None):
    """What the Snakefile does before it builds the DAG: type the ``--config`` values, pick the track,
    validate against its schema, plan the cells. Returns (track, plan). Every mistake is a ValueError
    of one line that names the file and line (or ``--config`` key) and says the fix."""
    from adaptbench import tracks

    source = GridSource(configfiles, overrides)
    config.update(typed_config(config))
    try:
        track = tracks.get_track(config.get("kind", "finetune"))
    except ValueError as e:
        raise ValueError(f"{source.where(['kind'])}: {str(e).removeprefix('grid: ')}") from None
    validate_schema(config, track.schema, source)
    try:
        return track, plan(config)
    except USER_ERRORS as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        raise ValueError(f"{source.name()}: {' '.join(str(msg).removeprefix('grid: ').split())}") from None


def read_grid_file(path: str | Path) -> dict:
    """A grid YAML as ``snakemake --configfile`` reads it, with the one-line errors Snakemake does not
    give: a missing file (with the shipped grids' names), YAML syntax (file:line), not a mapping."""
    import yaml

    path = Path(path)
    if not path.is_file():
        shipped = sorted(p.name for p in (Path(__file__).resolve().parents[1] / "workflows" / "grids").glob("*.yaml"))
        close = difflib.get_close_matches(path.name, shipped, n=2)
        hint = f" Did you mean: {', '.join(f'workflows/grids/{c}' for c in close)}?" if close else ""
        raise FileNotFoundError(f"{path}: no such grid file.{hint} Shipped grids: workflows/grids/*.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text; a grid is a YAML file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        raise ValueError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a grid is a YAML mapping (grid:, methods:, ...), got a {type(data).__name__}")
    return data


def merge_config(base: dict, new: dict) -> dict:
    """Later grid files override earlier ones key by key, nested mappings merged (as Snakemake does)."""
    out = dict(base)
    for key, value in new.items():
        out[key] = merge_config(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
