"""The leaderboard: every stored record, one table per protocol, one row per method.

Reads ``results/cells/*/result.json`` (or only a grid's cells, through ``results/grids/<grid>/index.json``,
with the grid's labels) and never trains. Each record gives one score per table column: the task's main
metric (the scoring's ``eval_info.main_metric``, else the task's or corpus's), of the epoch the
protocol selects (``budget.selection``: ``best`` or the final model), × 100 unless it is a perplexity or
a loss; a TTA cell its ``error_mean``; an LLM cell one column per evaluation task (lm-eval's main metric).

**Grouping: protocols are never mixed.** A record's ``protocol`` holds what decides comparability (model
weights, task and data hashes, budget, evaluation settings, seed) and ``protocol_hash`` is its hash. The
hash includes the seed, so the seeds of one protocol all have different hashes; a table joins them on a
*seedless* key computed from the ``protocol`` dict:

  - ``seed`` is dropped, and so is the seed where it is written inside a value (a randomly initialised
    model's weights are ``"random init, seed 3"``, which becomes ``"random init, seed *"``);
  - a column (one task) is the seedless protocol itself, with the column's task (an LLM cell scores
    several evaluation tasks under one protocol): every number in it shares it exactly;
  - a table is the seedless protocol less its task fields (``task``, ``task_version``, ``data``,
    ``suite``): one model, budget and evaluation setting across several tasks, as a paper's table.
    Two columns of one task with different data (another subset) stay two columns, marked by key.

Each table says which protocol it shows (track, model, budget, tasks with their data hashes, the seed
set). Schema-1 records (read through ``results.upgrade_v1``) have no protocol: they go under "unknown
protocol (schema 1)", one table per track and model, never beside schema-2 rows. Failed cells have no
protocol and no score: they are counted, not shown.

A row is a grid label (a method entry). One label with two configurations under one protocol (two grids
that name different hyperparameters ``lora``) becomes two rows, each marked by its configuration key.
Cells: mean ± std over seeds and the 95 % t-interval of the mean (n ≥ 2); ``Avg``: the mean over the
table's tasks per seed (seeds that ran every task), then the same statistics. Costs: trainable parameters
without the head, optimizer-state bytes and seconds per step (medians over the row's cells). Where a
claims file (claims/*.yaml) has the method × model × task × metric, the paper's number sits beside ours
with a verdict (``report.claim_verdict``); it counts as comparable only when a grid holding the cells
says ``report.comparable`` and names that paper in ``report.claims``.

The HTML page and ``report_all`` (every report regenerated from the store) are in ``html_report``.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pandas as pd

from adaptbench.config import RUN_CONTROL, SINCE_STORED  # run settings: never part of a cell
from adaptbench.results import config_hash, read_json, read_record

REPO = Path(__file__).resolve().parent.parent
TASK_FIELDS = ("task", "task_version", "data", "suite")  # what differs between the columns of one table
UNSCALED = ("ppl", "perplexity", "loss", "val_loss")  # printed as is; every other metric is a fraction × 100
SCHEMA1 = "unknown protocol (schema 1)"
FORMATS = ("md", "csv")


# ---- protocols without the seed ---------------------------------------------------------------------

def seedless(protocol: dict, seed) -> dict:
    """``protocol`` without ``seed``, and with ``seed <n>`` inside its strings written ``seed *``."""
    pattern = re.compile(rf"\bseed {re.escape(str(seed))}\b") if seed is not None else None

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items()}
        if isinstance(value, list):
            return [strip(v) for v in value]
        if isinstance(value, str) and pattern is not None:
            return pattern.sub("seed *", value)
        return value

    return strip({k: v for k, v in protocol.items() if k != "seed"})


def protocol_keys(record: dict) -> tuple[str, str, dict]:
    """(table key, column key, the table's seedless protocol) of a record; schema 1 gets a key per
    track × model under ``SCHEMA1``."""
    protocol = record.get("protocol")
    info = record.get("run_info") or {}
    if protocol is None:
        key = f"schema1:{record.get('track')}:{info.get('model')}"
        return key, f"{key}:{info.get('task')}", {"track": record.get("track"), "model": info.get("model")}
    free = seedless(protocol, protocol.get("seed", info.get("seed")))
    table = {k: v for k, v in free.items() if k not in TASK_FIELDS}
    return config_hash(table), config_hash(free), table


def variant_key(record: dict) -> str:
    """What a row holds beside its label: the method, its hyperparameters and training settings (less run
    control). Two configurations under one label and protocol become two rows."""
    info = record.get("run_info") or {}
    # run control is not a variant; nor is a setting at the value every cell stored before it had
    # (SINCE_STORED): a record that spells group_by_length: false and one that predates it are one row
    train = {k: v for k, v in (info.get("train") or {}).items()
             if k not in RUN_CONTROL and not (k in SINCE_STORED and SINCE_STORED[k] == v)} \
        if isinstance(info.get("train"), dict) else info.get("train")
    return config_hash({"method": info.get("method"), "params": info.get("method_params"), "train": train})


# ---- one record → its scores --------------------------------------------------------------------------

@lru_cache(maxsize=None)
def task_main_metric(task: str | None) -> str | None:
    from adaptbench import tasks
    from adaptbench.tasks import corpora

    if task in tasks.list_tasks():
        return tasks.get_task(task).main_metric
    if task in corpora.list_corpora():
        return corpora.get_corpus(task).main_metric
    return None


def main_metrics(record: dict) -> list[tuple[str, str]]:
    """(column, metric name) pairs a record contributes: one per task (LLM: per evaluation task)."""
    metrics, info = record.get("metrics") or {}, record.get("run_info") or {}
    track = record.get("track")
    if track == "llm":
        from adaptbench.tracks.llm.report import MAIN_METRIC

        return [(name.split("/")[0], name) for name in metrics
                if name.partition("/")[2] == MAIN_METRIC.get(name.split("/")[0], "acc")]
    if track == "tta":
        return [(info.get("task"), "error_mean")] if "error_mean" in metrics else []
    name = (record.get("eval_info") or {}).get("main_metric") or task_main_metric(info.get("task"))
    if name not in metrics:
        name = next(iter(metrics), None)
    return [(info.get("task"), name)] if name else []


def selection(record: dict) -> str:
    """Which epoch the protocol reports: ``best`` (the papers' dev protocol) or ``last``."""
    budget = (record.get("protocol") or {}).get("budget") or {}
    return (record.get("eval_info") or {}).get("selection") or budget.get("selection") or "last"


def scale(metric: str) -> float:
    return 1.0 if metric.split("/")[-1] in UNSCALED or metric in UNSCALED else 100.0


def record_scores(record: dict, path, label: str | None = None, grids: tuple = ()) -> list[dict]:
    """The leaderboard rows of one ok record (none for a failed one)."""
    if record.get("status", "ok") != "ok":
        return []
    info, train = record.get("run_info") or {}, record.get("train_info") or {}
    git = info.get("git") or {}
    table, column, table_protocol = protocol_keys(record)
    data = (record.get("protocol") or {}).get("data") or {}
    base = {
        "label": label or info.get("label") or info.get("method"), "method": info.get("method"),
        "family": info.get("family"), "track": record.get("track"), "model": info.get("model"),
        "seed": info.get("seed"), "trainable_params": (train.get("params") or {}).get("trainable_no_head"),
        "optimizer_state_bytes": train.get("optimizer_state_bytes"), "seconds_per_step": train.get("seconds_per_step"),
        "config_hash": record.get("config_hash"), "protocol_hash": record.get("protocol_hash"),
        "table_key": table, "column_key": column, "table_protocol": json.dumps(table_protocol),
        "variant": variant_key(record), "commit": (git.get("commit") or "")[:10] or None, "dirty": git.get("dirty"),
        "data": ", ".join(f"{k} {str(v)[:12]}" for k, v in data.items()) if isinstance(data, dict) else str(data)[:12],
        "task_version": (record.get("protocol") or {}).get("task_version"), "synthetic": bool(info.get("synthetic")),
        "schema1": record.get("protocol") is None, "grids": ",".join(grids), "path": str(path),
    }
    best = selection(record) == "best"
    rows = []
    for task, name in main_metrics(record):
        entry = record["metrics"][name]
        value = entry.get("best", entry.get("value")) if best else entry.get("value")
        if value is None or not math.isfinite(float(value)):
            continue
        rows.append({**base, "task": task, "metric": name, "column_key": config_hash([column, task]),  # LLM: per eval task
                     "higher_is_better": bool(entry.get("higher_is_better", True)),
                     "raw": float(value), "score": float(value) * scale(name)})
    return rows


# ---- the store ---------------------------------------------------------------------------------------

def grid_indexes(results: str | Path) -> dict[str, dict]:
    """Every grid's index under ``results/grids`` (unreadable ones named on stderr and skipped)."""
    out = {}
    for path in sorted(Path(results, "grids").glob("*/index.json")):
        try:
            index = read_json(path)
        except ValueError as e:
            print(f"adaptbench leaderboard: skipped {e}", file=sys.stderr)
            continue
        if isinstance(index, dict) and isinstance(index.get("cells"), list):
            out[path.parent.name] = index
    return out


@lru_cache(maxsize=None)
def grid_config(name: str, results: str = "results") -> dict | None:
    """A grid's configuration: ``results/grids/<grid>/grid.json`` where the workflow stored the resolved
    one, else the shipped YAML whose ``grid:`` is ``name`` (``workflows/grids/<name>.yaml`` first)."""
    import yaml

    stored = Path(results, "grids", name, "grid.json")
    if stored.is_file():
        return read_json(stored)
    path = _shipped_grids().get(name)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) if path else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) and data.get("grid") == name else None


@lru_cache(maxsize=1)
def _shipped_grids() -> dict[str, Path]:
    """Grid name (its top-level ``grid:`` line) → shipped YAML; read as text, not parsed."""
    out = {}
    for path in sorted((REPO / "workflows" / "grids").glob("*.yaml")):
        match = re.search(r"^grid:\s*['\"]?([A-Za-z0-9_.+-]+)", path.read_text(encoding="utf-8", errors="replace"), re.M)
        if match:
            out.setdefault(match.group(1), path)
    return out


def available_grids(results: str | Path) -> list[str]:
    return sorted(p.parent.name for p in Path(results, "grids").glob("*/index.json"))


def unknown_grid(grid: str, results: str | Path) -> FileNotFoundError:
    import difflib

    known = available_grids(results)
    close = difflib.get_close_matches(grid, known, n=2)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return FileNotFoundError(f"{Path(results, 'grids', grid, 'index.json')}: no stored grid '{grid}'.{hint} "
                             f"Stored grids: {', '.join(known) or 'none'} (a grid is stored once its DAG has run)")


@dataclass
class Store:
    """Score rows of the stored records, and what was left out."""

    frame: pd.DataFrame
    records: int = 0
    failed: int = 0
    problems: list = field(default_factory=list)
    source: str = ""


def read_store(results: str | Path = "results", grid: str | None = None) -> Store:
    """Score rows of every stored record (or of one grid's cells, with its labels)."""
    results = Path(results)
    indexes = grid_indexes(results)
    member: dict[str, list[str]] = {}
    for name, index in indexes.items():
        for entry in index["cells"]:
            member.setdefault(entry.get("key"), []).append(name)
    if grid is not None:
        if grid not in indexes:
            raise unknown_grid(grid, results)
        items = [(results / "cells" / e["key"] / "result.json", e.get("label")) for e in indexes[grid]["cells"]]
        items = [(p, label) for p, label in items if p.is_file()]
        source = f"grid '{grid}' ({len(indexes[grid]['cells'])} cells in its index)"
    else:
        items = [(p, None) for p in sorted((results / "cells").glob("*/result.json"))]
        source = str(results / "cells")
    rows, problems, failed = [], [], 0
    for path, label in items:
        try:
            record = read_record(path)
        except ValueError as e:
            problems.append(str(e))
            continue
        failed += record.get("status", "ok") != "ok"
        rows.extend(record_scores(record, path, label, tuple(member.get(path.parent.name, ()))))
    return Store(pd.DataFrame(rows), len(items), failed, problems, source)


def select(frame: pd.DataFrame, track=None, model=None, task=None) -> pd.DataFrame:
    """Rows of the named track / model / task; an unknown name is a one-line error listing the stored ones."""
    import difflib

    for column, wanted in (("track", track), ("model", model), ("task", task)):
        if wanted is None or frame.empty:
            continue
        known = sorted(map(str, frame[column].dropna().unique()))
        if wanted not in known:
            close = difflib.get_close_matches(wanted, known, n=2)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ValueError(f"--{column}: no stored result has {column} '{wanted}'.{hint} Stored: {', '.join(known)}")
        frame = frame[frame[column] == wanted]
    return frame


# ---- statistics --------------------------------------------------------------------------------------

def interval(values) -> dict:
    """Mean, std, n and the 95 % t-interval of the mean (NaN bounds below two values)."""
    from scipy.special import stdtrit  # Student's t quantile; scipy.stats would cost a second to import

    values = [float(v) for v in values]
    n = len(values)
    mean = sum(values) / n if n else math.nan
    std = statistics.stdev(values) if n > 1 else 0.0
    half = float(stdtrit(n - 1, 0.975)) * std / math.sqrt(n) if n > 1 else math.nan
    return {"n": n, "mean": mean, "std": std, "lo": mean - half, "hi": mean + half}


def fmt_stat(s: dict, digits: int = 1) -> str:
    if not s or not s["n"]:
        return "—"
    if s["n"] == 1:
        return f"{s['mean']:.{digits}f} (n=1)"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f} [{s['lo']:.{digits}f}, {s['hi']:.{digits}f}]"


def human_count(n) -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "—"
    for unit, size in (("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.{2 if unit == 'M' else 1}f}{unit}"
    return str(int(n))


def human_bytes(n) -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "—"
    for unit, size in (("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if n >= size:
            return f"{n / size:.{2 if unit == 'G' else 1}f}{unit}"
    return f"{int(n)}B"


def pareto_front(points: list[tuple[str, float, float]], higher_is_better: bool = True) -> set[str]:
    """Names of the points (name, cost, score) that no other point beats: at most the cost and at least the
    score (at most, for a lower-is-better score), strictly better in one."""
    def beats(a, b):
        better = a[2] >= b[2] if higher_is_better else a[2] <= b[2]
        strictly = a[1] < b[1] or (a[2] > b[2] if higher_is_better else a[2] < b[2])
        return a[1] <= b[1] and better and strictly

    return {p[0] for p in points if not any(beats(q, p) for q in points if q is not p)}


# ---- tables ------------------------------------------------------------------------------------------

@dataclass
class Column:
    key: str
    task: str
    title: str
    metric: str
    higher_is_better: bool
    data: str  # data hashes (short), for the protocol line


@dataclass
class Board:
    """One table: one protocol (less the seed; its columns one task each), one row per method."""

    key: str
    track: str
    heading: str
    protocol: list[str]  # lines that say which protocol the table shows
    columns: list[Column]
    rows: list[dict]  # row, label, method, family, stats {column key | "Avg": interval}, costs, provenance
    claims: list[dict]
    seeds: list
    synthetic: bool = False

    def table(self) -> pd.DataFrame:
        """The display table (strings), best Avg first."""
        out = []
        for r in self.rows:
            row = {"method": r["row"]}
            for c in self.columns:
                cell = fmt_stat(r["stats"].get(c.key), self.digits(c.metric))
                claim = next((x for x in self.claims if x["row"] == r["row"] and x["column"] == c.key), None)
                row[c.title] = cell + (f" [paper {claim['paper_value']:.1f}]" if claim else "")
            if len(self.columns) > 1:
                row["Avg"] = fmt_stat(r["stats"].get("Avg"), 1)
            row.update({"seeds": r["n_seeds"], "#params": human_count(r["trainable_params"]),
                        "opt. state": human_bytes(r["optimizer_state_bytes"]),
                        "s/step": "—" if r["seconds_per_step"] is None else f"{r['seconds_per_step']:.3f}"})
            out.append(row)
        return pd.DataFrame(out)

    @staticmethod
    def digits(metric: str) -> int:
        return 2 if scale(metric) == 1.0 else 1


def _median(values) -> float | None:
    values = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(values) if values else None


def _describe(table_protocol: dict, columns: list[Column], seeds: list) -> list[str]:
    """The protocol a table shows, in lines: every field, tasks with their data, the seed set."""
    def flat(value):
        if isinstance(value, dict):
            return ", ".join(f"{k}={flat(v)}" for k, v in value.items())
        if isinstance(value, list):
            return "[" + ", ".join(map(flat, value)) + "]"
        return str(value)

    lines = [f"{k}: {flat(v)}" for k, v in table_protocol.items()]
    lines.append("tasks: " + "; ".join(f"{c.title} ({c.metric}{', data ' + c.data if c.data else ''})" for c in columns))
    lines.append(f"seeds: {', '.join(map(str, seeds))} ({len(seeds)})")
    return lines


def _heading(track: str, table_protocol: dict, key: str, schema1: bool) -> str:
    if schema1:
        return f"{SCHEMA1}: {track}, model {table_protocol.get('model')} — comparability not checked"
    model = table_protocol.get("model") or table_protocol.get("source") or "?"
    if isinstance(model, dict):  # {source, weights | package_version | sha256 ...}: the source and what pins it
        pin = model.get("weights") or model.get("package_version") or str(model.get("sha256", ""))[:12]
        model = f"{model.get('source') or json.dumps(model, sort_keys=True)}" + (f" ({pin})" if pin else "")
    return f"{track} · {model} · protocol {key[:8]} (seedless)"


def _row_names(scores: list[dict]) -> None:
    """Set each score's row name: its label, or label [config key] where the label holds two configurations
    in one column (never averaged together)."""
    variants = defaultdict(set)
    for r in scores:
        variants[(r["label"], r["column_key"])].add(r["variant"])
    split = {label for (label, _), v in variants.items() if len(v) > 1}
    for r in scores:
        r["row"] = f"{r['label']} [{r['variant'][:6]}]" if r["label"] in split else str(r["label"])


def _group(items, key) -> dict:
    out = defaultdict(list)
    for item in items:
        out[item[key]].append(item)
    return out


def _board_row(row: str, g: list[dict], cols: list[Column], one_direction: bool) -> dict:
    """One row's statistics per column and on the average, its costs and provenance."""
    cells = {k: sorted(v, key=lambda r: r["seed"]) for k, v in _group(g, "column_key").items()}
    stats = {k: interval([r["score"] for r in v]) for k, v in cells.items()}
    per_seed = {seed: {r["column_key"]: r["score"] for r in v} for seed, v in _group(g, "seed").items()}
    complete = [sum(v.values()) / len(v) for v in per_seed.values() if len(v) == len(cols)]
    if len(cols) > 1 and one_direction and complete:
        stats["Avg"] = interval(complete)
    first = g[0]
    return {
        "row": row, "label": str(first["label"]), "method": first["method"], "family": first["family"],
        "model": first["model"], "stats": stats, "n_seeds": len(per_seed), "seeds": sorted(per_seed),
        "trainable_params": _median(r["trainable_params"] for r in g),
        "optimizer_state_bytes": _median(r["optimizer_state_bytes"] for r in g),
        "seconds_per_step": _median(r["seconds_per_step"] for r in g),
        "commits": sorted({f"{r['commit']}{' (dirty)' if r['dirty'] else ''}" for r in g if r["commit"]}),
        "provenance": {k: [{"seed": r["seed"], "config": r["config_hash"], "commit": r["commit"], "dirty": r["dirty"],
                            "data": r["data"], "score": r["score"]} for r in v] for k, v in cells.items()},
        "grids": sorted({x for r in g for x in str(r["grids"]).split(",") if x}),
    }


def build_boards(frame: pd.DataFrame, claims: list[dict] | None = None, results: str | Path = "results") -> list[Board]:
    """The leaderboard tables of a score frame (``read_store(...).frame``), schema-2 tables first. Plain
    Python over the rows: a pandas group per table row costs seconds on a store of 10k records."""
    if frame.empty:
        return []
    boards = []
    for key, part in _group(frame.to_dict("records"), "table_key").items():
        _row_names(part)
        track, schema1 = str(part[0]["track"]), bool(part[0]["schema1"])
        cols = [Column(ck, str(g[0]["task"]), str(g[0]["task"]), str(g[0]["metric"]), bool(g[0]["higher_is_better"]),
                       str(g[0]["data"] or "")) for ck, g in _group(part, "column_key").items()]
        cols.sort(key=lambda c: (c.task, c.key))
        for c in cols:  # one task under two data hashes: two columns, told apart by key
            if sum(d.task == c.task for d in cols) > 1:
                c.title = f"{c.task} [{c.key[:6]}]"
        directions = {c.higher_is_better for c in cols}
        rows = [_board_row(row, g, cols, len(directions) == 1) for row, g in _group(part, "row").items()]
        higher = directions == {True} or len(directions) != 1
        sort_key = "Avg" if len(cols) > 1 else cols[0].key
        rows.sort(key=lambda r: (sort_key not in r["stats"],
                                 -r["stats"][sort_key]["mean"] if sort_key in r["stats"] and higher
                                 else r["stats"].get(sort_key, {}).get("mean", 0)))
        table_protocol = json.loads(part[0]["table_protocol"])
        seeds = sorted({r["seed"] for r in part if r["seed"] is not None})
        boards.append(Board(key, track, _heading(track, table_protocol, key, schema1),
                            _describe(table_protocol, cols, seeds), cols, rows, [], seeds,
                            any(r["synthetic"] for r in part)))
    for board in boards:
        board.claims = match_claims(board, claims if claims is not None else _load_claims(), results)
    boards.sort(key=lambda b: (b.heading.startswith(SCHEMA1), b.track, b.heading))
    return boards


def _load_claims() -> list[dict]:
    from adaptbench.claims import load_claims

    return load_claims()


def match_claims(board: Board, claims: list[dict], results: str | Path = "results") -> list[dict]:
    """The papers' numbers for this board's rows (method × model × task × metric), with verdicts."""
    out = []
    for r in board.rows:
        configs = [c for c in (grid_config(g, str(results)) for g in r["grids"]) if c]
        reports = [c.get("report") or {} for c in configs]
        model_map = {k: v for rep in reports for k, v in (rep.get("claims_model") or {}).items()}
        for col in board.columns:
            hits = [c for c in claims if c["task"] == col.task and c["metric"] == col.metric.split("/")[-1]
                    and c["model"] == model_map.get(r["model"], r["model"]) and c["method"] in (r["label"], r["method"])]
            claim = next((c for c in hits if c["method"] == r["label"]), None) or next(iter(hits), None)
            stat = r["stats"].get(col.key)
            if claim is None or not stat:
                continue
            scores = [p["score"] for p in r["provenance"][col.key]]
            ours = pd.Series(scores).median() if claim["aggregate"] == "median" else stat["mean"]
            ours = ours / scale(col.metric) * claim.get("scale", 100) if scale(col.metric) != 1.0 else ours
            from adaptbench.report import claim_verdict  # matplotlib: imported only where a claim matches

            papers = [rep for rep in reports if claim["paper"] in ([rep.get("claims")] if isinstance(rep.get("claims"), str)
                                                                  else list(rep.get("claims") or []))]
            comparable = any(rep.get("comparable") for rep in papers)
            reason = next((rep.get("not_comparable_reason") for rep in papers if rep.get("not_comparable_reason")),
                          "no grid holding these cells mirrors the paper's setting (report.comparable)")
            out.append({"row": r["row"], "column": col.key, "task": col.task, "metric": claim["metric"],
                        "paper": claim["paper"], "table": claim.get("table"), "ours": round(float(ours), 2),
                        "paper_value": claim["value"], "aggregate": claim["aggregate"],
                        "verdict": claim_verdict(float(ours), claim, comparable, reason)})
    return out


# ---- output ------------------------------------------------------------------------------------------

def summary_line(store: Store, boards: list[Board]) -> str:
    skipped = f", {len(store.problems)} unreadable (skipped)" if store.problems else ""
    return (f"{store.records} records from {store.source}: {store.failed} failed (not shown){skipped}; "
            f"{len(boards)} table(s), one per protocol")


def to_markdown(boards: list[Board], header: str = "") -> str:
    lines = [header, ""] if header else []
    if not boards:
        lines.append("No stored results to show (run a grid, or check out the repository's stored records).")
    for b in boards:
        lines += [f"## {b.heading}", ""]
        if b.synthetic:
            lines += ["SYNTHETIC data (generated by adaptbench; never compared with paper numbers).", ""]
        lines += ["Protocol: " + "; ".join(b.protocol) + ".", "",
                  "Cells: mean ± std over seeds [95 % t-interval of the mean]; Avg over the tasks per seed. "
                  "#params: trainable, without the task head.", "",
                  b.table().to_markdown(index=False, disable_numparse=True), ""]
        if b.claims:
            lines += ["Against the papers:", ""] + [
                f"- {c['row']} / {c['task']}: ours {c['ours']:.2f} vs {c['paper']} {c['paper_value']} "
                f"({c['aggregate']}): {c['verdict']}" for c in b.claims] + [""]
    return "\n".join(lines)


def to_csv(boards: list[Board]) -> str:
    """One line per table × row × column (and Avg): the statistics, costs and the paper's number."""
    out = []
    for b in boards:
        for r in b.rows:
            for c in [*b.columns, Column("Avg", "Avg", "Avg", "", True, "")]:
                s = r["stats"].get(c.key)
                if not s:
                    continue
                claim = next((x for x in b.claims if x["row"] == r["row"] and x["column"] == c.key), {})
                out.append({"protocol": b.key[:16], "table": b.heading, "method": r["row"], "task": c.title,
                            "metric": c.metric, "n": s["n"], "mean": s["mean"], "std": s["std"], "ci95_low": s["lo"],
                            "ci95_high": s["hi"], "seeds": " ".join(map(str, r["seeds"])),
                            "trainable_params": r["trainable_params"], "optimizer_state_bytes": r["optimizer_state_bytes"],
                            "seconds_per_step": r["seconds_per_step"], "paper": claim.get("paper_value"),
                            "verdict": claim.get("verdict")})
    return pd.DataFrame(out).to_csv(index=False)


def leaderboard(results="results", grid=None, track=None, model=None, task=None, fmt="md",
                claims_dir=None) -> tuple[str, Store, list[Board]]:
    """The leaderboard as text in ``fmt`` (md or csv; html: ``html_report.leaderboard_html``), with the store
    and the tables it shows."""
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    store, boards = load_boards(results, grid, track, model, task, claims_dir)
    return (to_csv(boards) if fmt == "csv" else to_markdown(boards, summary_line(store, boards))), store, boards


def load_boards(results="results", grid=None, track=None, model=None, task=None, claims_dir=None):
    """(store, tables) of the stored records, filtered; unreadable records named on stderr."""
    from adaptbench.claims import load_claims

    store = read_store(results, grid)
    for line in store.problems:
        print(f"adaptbench leaderboard: skipped {line}", file=sys.stderr)
    return store, build_boards(select(store.frame, track, model, task), load_claims(claims_dir), results)
