"""Tasks as data: one YAML per task under tasks/<suite>/, one registry, one loader.

A task YAML names its text fields, label kind, metrics and where its rows come from: a local
GLUE-format folder (``local:``), the Hugging Face hub (``hub:``) or the embedded generator
(``synthetic:``). This module imports no torch, so the Snakefile can use it at parse time.

A researcher's own tasks live in their folders (a grid's ``task_dirs:``, or ``ADAPTBENCH_TASK_DIRS``): one
YAML per task naming its files beside it, no code::

    task: my_reviews
    kind: classification          # or regression
    num_labels: 2
    text_fields: [review]         # one column, or two for sentence pairs
    label_field: sentiment
    label_names: [neg, pos]       # optional: the labels as written in the files (else 0..num_labels-1)
    metrics: [acc, f1]            # adaptbench.metrics: acc, f1, mcc, pearson, spearman
    files: {train: train.tsv, validation: dev.tsv}   # relative to this YAML; .tsv, .csv or .jsonl
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from adaptbench.results import portable_source
from adaptbench.tasks import synthetic_text

TASK_DIR = Path(__file__).parent
SPLITS = ("train", "validation")
TASK_DIRS_ENV = "ADAPTBENCH_TASK_DIRS"  # the researcher's task folders (os.pathsep-separated), set from task_dirs
USER_SUITE = "user"
USER_KEYS = {"task", "kind", "num_labels", "text_fields", "label_field", "label_names", "metrics", "main_metric",
             "files", "version", "description"}
FORMATS = {".tsv": "\t", ".csv": ","}  # and .jsonl: one JSON object per line

@dataclass(frozen=True)
class TaskSpec:
    task: str
    suite: str
    version: int
    description: str
    kind: str  # "classification" | "regression"
    num_labels: int
    text_fields: tuple[str, ...]
    metrics: tuple[str, ...]
    main_metric: str
    label_names: tuple[str, ...] | None = None
    local: dict | None = None
    hub: dict | None = None
    synthetic: dict | None = None
    extra: dict = field(default_factory=dict)

    @property
    def is_synthetic(self) -> bool:
        return self.synthetic is not None

    @property
    def eval_splits(self) -> tuple[str, ...]:
        """``validation`` plus any extra dev sets (MNLI's mismatched ``validation_mm``)."""
        if self.local:
            return tuple(s for s in self.local["splits"] if s != "train")
        return ("validation",)


def task_dirs() -> list[Path]:
    return [Path(d) for d in os.environ.get(TASK_DIRS_ENV, "").split(os.pathsep) if d]


def use_task_dirs(dirs) -> None:
    """Make the researcher's task folders known to this process and the jobs it starts (a grid's
    ``task_dirs``). A missing folder is a one-line error."""
    add_env_folders(TASK_DIRS_ENV, dirs, "task_dirs", "one YAML per task")


def add_env_folders(env: str, dirs, field: str, holds: str) -> None:
    """Append folders (one or a list, resolved) to the path list in environment variable ``env``: known to this
    process and inherited by the jobs it starts. A missing folder: one line naming ``field``."""
    resolved = []
    for d in [dirs] if isinstance(dirs, (str, Path)) else dirs:
        path = Path(d).expanduser()
        if not path.is_dir():
            raise ValueError(f"{field}: {d} is not a folder (it should hold {holds})")
        resolved.append(str(path.resolve()))
    before = [d for d in os.environ.get(env, "").split(os.pathsep) if d]
    os.environ[env] = os.pathsep.join(dict.fromkeys([*before, *resolved]))


def _task_files() -> dict[str, Path]:
    """Task YAMLs by suite folder; corpora/ holds the pretraining corpora (adaptbench/tasks/corpora). The
    researcher's folders come after: a task name the package already has is an error, not a shadow."""
    files = {p.stem: p for p in sorted(TASK_DIR.glob("*/*.yaml")) if p.parent.name != "corpora"}
    for folder in task_dirs():
        for path in sorted(folder.glob("*.yaml")):
            if path.stem in files and files[path.stem] != path:
                raise ValueError(f"{path}: task '{path.stem}' already exists ({files[path.stem].name}); rename the file")
            files[path.stem] = path
    return files


def _content_digest(yaml_file: Path, data_files: tuple) -> str:
    h = hashlib.sha256()
    for f in (yaml_file, *data_files):
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:12]


def _user_task(path: Path, raw) -> dict:
    """A researcher's task YAML → the fields of a local task whose folder is the YAML's own."""
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a task file is a mapping of {sorted(USER_KEYS)}")
    unknown = sorted(set(raw) - USER_KEYS)
    if unknown:
        close = {k: difflib.get_close_matches(k, USER_KEYS, n=1) for k in unknown}
        hint = "; ".join(f"'{k}' (did you mean '{c[0]}'?)" if c else f"'{k}'" for k, c in close.items())
        raise ValueError(f"{path}: unknown field(s) {hint}; valid: {sorted(USER_KEYS)}")
    for key in ("kind", "num_labels", "text_fields", "label_field", "metrics", "files"):
        if key not in raw:
            raise ValueError(f"{path}: missing field '{key}'")
    if raw["kind"] not in ("classification", "regression"):
        raise ValueError(f"{path}: kind must be classification or regression, got {raw['kind']!r}")
    if raw.get("task", path.stem) != path.stem:
        raise ValueError(f"{path}: task '{raw['task']}' must be the file's name ({path.stem})")
    files = raw["files"]
    if not isinstance(files, dict) or "train" not in files or "validation" not in files:
        raise ValueError(f"{path}: files must name a train and a validation file, got {files!r}")
    for split, name in files.items():
        if Path(name).suffix not in (*FORMATS, ".jsonl"):
            raise ValueError(f"{path}: files.{split}: {name} is not .tsv, .csv or .jsonl")
        if not (path.parent / name).is_file():
            raise ValueError(f"{path}: files.{split}: {path.parent / name} not found")
    from adaptbench.metrics import METRICS

    bad = [m for m in raw["metrics"] if m not in METRICS]
    if bad:
        raise ValueError(f"{path}: unknown metric(s) {bad}; available: {sorted(METRICS)}")
    # the version names the content: a cell is keyed by task name and version, and two folders may hold
    # different tasks of one name; the YAML and its files' bytes decide it
    digest = _content_digest(path, tuple(path.parent / name for name in files.values()))
    return {"task": path.stem, "suite": USER_SUITE, "version": f"{raw.get('version', 1)}+{digest}",
            "description": raw.get("description", f"the researcher's task {path.name}"), "kind": raw["kind"],
            "num_labels": raw["num_labels"], "text_fields": raw["text_fields"], "metrics": raw["metrics"],
            "main_metric": raw.get("main_metric", raw["metrics"][0]), "label_names": raw.get("label_names"),
            "local": {"dir": ".", "label_field": raw["label_field"], "header": True, "splits": dict(files)},
            "root": str(path.parent)}


def list_tasks(suite: str | None = None) -> list[str]:
    return sorted(n for n, p in _task_files().items() if suite is None or p.parent.name == suite)


def get_task(name: str) -> TaskSpec:
    files = _task_files()
    if name not in files:
        close = difflib.get_close_matches(name, files, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise KeyError(f"Unknown task '{name}'.{hint} Available: {', '.join(sorted(files))}")
    path = files[name]
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if path.parent.parent != TASK_DIR:  # the researcher's task: its files sit beside its YAML
        raw = _user_task(path, raw)
    known = set(TaskSpec.__dataclass_fields__) - {"extra"}
    for key in ("text_fields", "metrics", "label_names"):
        if raw.get(key) is not None:
            raw[key] = tuple(raw[key])
    return TaskSpec(**{k: v for k, v in raw.items() if k in known},
                    extra={k: v for k, v in raw.items() if k not in known})


# ---- availability (parse-time safe) -------------------------------------------------------------

def local_split_path(spec: TaskSpec, data_dir: str | Path, split: str) -> Path:
    return Path(data_dir) / spec.local["dir"] / spec.local["splits"][split]


def own_root(spec: TaskSpec) -> str | None:
    """The folder a researcher's task reads (its YAML's), whatever the grid's data_dir."""
    return spec.extra.get("root")


def unavailable_reason(spec: TaskSpec, data_dir: str | None) -> str | None:
    """Why this task cannot run with this data source, or None when it can.

    Without ``data_dir`` a non-synthetic task reads the hub; whether the hub answers is only known
    when the job runs, so that is reported by the job."""
    data_dir = own_root(spec) or data_dir
    if spec.is_synthetic or data_dir is None:
        return None
    if not spec.local:
        return f"task '{spec.task}' has no local format; it reads only from the hub"
    missing = [str(local_split_path(spec, data_dir, s)) for s in spec.local["splits"]
               if not local_split_path(spec, data_dir, s).is_file()]
    if missing:
        return f"data unavailable: {', '.join(missing)} not found"
    return None


# ---- loading rows ----------------------------------------------------------------------------------

@dataclass
class Split:
    texts: list[tuple[str, ...]]
    labels: list  # int class ids or float scores
    source: str  # where the rows came from, for run_info
    sha256: str  # hash of the rows as read (before subsetting)

    def __len__(self) -> int:
        return len(self.labels)


def _rows_hash(texts, labels) -> str:
    h = hashlib.sha256()
    for t, y in zip(texts, labels):
        h.update(("\t".join(t) + "\t" + str(y) + "\n").encode())
    return h.hexdigest()


def _label(spec: TaskSpec, raw, where: str):
    if spec.kind == "regression":
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: label {raw!r} is not a number") from None
    if spec.label_names and raw in spec.label_names:
        return spec.label_names.index(raw)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        valid = list(spec.label_names or range(spec.num_labels))
        raise ValueError(f"{where}: label {raw!r} is not one of {valid}") from None
    if not 0 <= value < spec.num_labels:
        raise ValueError(f"{where}: label {value} outside 0..{spec.num_labels - 1}")
    return value


def _read_tsv(spec: TaskSpec, path: Path) -> tuple[list, list]:
    """GLUE TSV with quoting disabled (a field that starts with '"' must not swallow rows)."""
    cfg = spec.local
    text_fields, label_field = list(spec.text_fields), cfg["label_field"]
    try:
        return _read_tsv_rows(spec, path, cfg, text_fields, label_field)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}); GLUE files are UTF-8 TSV") from None


def _read_jsonl_rows(spec: TaskSpec, path: Path, text_fields: list, label_field: str) -> tuple[list, list]:
    texts, labels = [], []
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not a JSON object ({e.msg})") from None
            missing = [c for c in text_fields + [label_field] if not isinstance(row, dict) or c not in row]
            if missing:
                raise ValueError(f"{path}:{lineno}: missing field(s) {missing}")
            texts.append(tuple(str(row[c]) for c in text_fields))
            labels.append(_label(spec, row[label_field], f"{path}:{lineno}"))
    if not labels:
        raise ValueError(f"{path}: no rows")
    return texts, labels


def _read_tsv_rows(spec: TaskSpec, path: Path, cfg: dict, text_fields: list, label_field: str) -> tuple[list, list]:
    if path.suffix == ".jsonl":
        return _read_jsonl_rows(spec, path, text_fields, label_field)
    texts, labels = [], []
    with open(path, newline="", encoding="utf-8-sig") as f:  # MRPC files start with a BOM
        csv_file = path.suffix == ".csv"  # a researcher's CSV quotes fields with commas; GLUE TSV must not
        reader = csv.reader(f, delimiter=FORMATS.get(path.suffix, "\t"),
                            quoting=csv.QUOTE_MINIMAL if csv_file else csv.QUOTE_NONE)
        header = next(reader, None) if cfg.get("header", True) else list(cfg["columns"])
        if header is None:
            raise ValueError(f"{path}: empty file; expected a header row with {text_fields + [label_field]}")
        missing = [c for c in text_fields + [label_field] if c not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; header is {header}")
        idx = [header.index(c) for c in text_fields]
        li = header.index(label_field)
        for lineno, row in enumerate(reader, start=2 if cfg.get("header", True) else 1):
            if not row:
                continue
            if len(row) <= max(idx + [li]):
                raise ValueError(f"{path}:{lineno}: malformed row, {len(row)} field(s), expected {len(header)}")
            texts.append(tuple(row[i] for i in idx))
            labels.append(_label(spec, row[li], f"{path}:{lineno}"))
    if not labels:
        raise ValueError(f"{path}: no rows")
    return texts, labels


def _read_hub(spec: TaskSpec, split: str) -> tuple[list, list, str]:
    import datasets  # heavy; only jobs that read the hub pay for it

    hub = spec.hub
    split_name = hub.get("splits", {}).get(split, "validation" if split == "validation" else split)
    try:
        ds = datasets.load_dataset(hub["path"], hub.get("name"), split=split_name)
    except Exception as e:  # the hub is unreachable offline; say so in one line
        raise FileNotFoundError(
            f"task '{spec.task}': no data_dir given and the hub dataset {hub['path']}/{hub.get('name')} "
            f"could not be loaded ({type(e).__name__}); pass data_dir=<GLUE folder>") from None
    fields = hub.get("text_fields", spec.text_fields)
    texts = [tuple(row[f] for f in fields) for row in ds]
    labels = [_label(spec, row["label"], f"{hub['path']}:{split_name}") for row in ds]
    return texts, labels, f"hub:{hub['path']}/{hub.get('name')}:{split_name}"


def load_split(spec: TaskSpec, split: str, data_dir: str | None = None,
               max_samples: int | None = None, seed: int = 0) -> Split:
    """Rows of one split. ``max_samples`` takes a deterministic subset (fixed by ``seed``), the same
    for every method, so that methods are compared on identical data."""
    if spec.is_synthetic:
        syn = spec.synthetic
        rows = synthetic_text.generate(syn["generator"], split, syn[split])
        texts = [tuple(r[f] for f in spec.text_fields) for r in rows]
        labels = [r["label"] for r in rows]
        source = f"synthetic:{syn['generator']}:{split}"
    elif data_dir is not None or own_root(spec):
        data_dir = own_root(spec) or data_dir
        reason = unavailable_reason(spec, data_dir)
        if reason:
            raise FileNotFoundError(f"task '{spec.task}': {reason}")
        path = local_split_path(spec, data_dir, split)
        texts, labels = _read_tsv(spec, path)
        source = portable_source(path, data_dir)  # never this machine's absolute path
    else:
        texts, labels, source = _read_hub(spec, split)
    digest = _rows_hash(texts, labels)
    if max_samples is not None and max_samples < len(labels):
        keep = sorted(random.Random(f"subset/{spec.task}/{split}/{seed}").sample(range(len(labels)), max_samples))
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
        source += f" (subset {max_samples}, subset_seed {seed})"
    return Split(texts, labels, source, digest)
