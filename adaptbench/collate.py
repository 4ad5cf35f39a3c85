"""Result records of every track → one tidy table: one row per cell × metric. Every report and the
leaderboard read it.

Columns: the cell's readable names (``label`` from the grid's index when there is one, else the
record's), ``track``, ``status`` and ``reason``, the metric (``metric``, ``value`` = the final model's
score, ``best`` = the best epoch's where the track has epochs, ``higher_is_better``, ``stderr``,
``split``), cost columns (parameters, optimizer-state bytes, time, memory), the two hashes, and the
track's own facets (``run_info.facets``: a TTA cell's scenario and batch size, ...). A failed cell is
one row with its reason and no metric; an unreadable record is named on stderr and skipped, never the
end of the report.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from adaptbench.results import atomic_write_text, read_json, read_record

COLUMNS = ["label", "track", "method", "family", "model", "task", "seed", "synthetic", "status", "reason",
           "metric", "value", "best", "higher_is_better", "stderr", "split", "best_epoch", "epochs",
           "trainable_params", "trainable_params_with_head", "total_params", "wall_seconds", "seconds_per_step",
           "peak_memory_bytes", "optimizer_state_bytes", "optimizer", "config_hash", "protocol_hash", "git_commit",
           "path"]
RESULT, FAILURE = "result.json", "failure.json"


def find_results(paths) -> list[Path]:
    found = []
    for p in map(Path, paths):
        found.extend(sorted(p.rglob(RESULT)) if p.is_dir() else [p])
    return found


def cell_rows(record: dict, path: Path, label: str | None = None) -> list[dict]:
    """The tidy rows of one record (schema 2, or schema 1 read through ``read_record``)."""
    info, train = record.get("run_info", {}), record.get("train_info", {}) or {}
    params = train.get("params") or {}
    base = {
        "label": label or info.get("label", info.get("method")), "track": record.get("track"),
        "method": info.get("method"), "family": info.get("family"), "model": info.get("model"),
        "task": info.get("task"), "seed": info.get("seed"), "synthetic": info.get("synthetic", False),
        "status": record.get("status", "ok"), "reason": record.get("reason"),
        "best_epoch": train.get("best_epoch"), "epochs": train.get("epochs"),
        "trainable_params": params.get("trainable_no_head"), "trainable_params_with_head": params.get("trainable"),
        "total_params": params.get("total"), "wall_seconds": train.get("wall_seconds"),
        "seconds_per_step": train.get("seconds_per_step"), "peak_memory_bytes": train.get("peak_memory_bytes"),
        "optimizer_state_bytes": train.get("optimizer_state_bytes"),
        "optimizer": (info.get("train") or {}).get("optimizer", "adamw") if isinstance(info.get("train"), dict) else None,
        "config_hash": record.get("config_hash"), "protocol_hash": record.get("protocol_hash"),
        "git_commit": (info.get("git") or {}).get("commit"), "path": str(path),
        **(info.get("facets") or {}),
    }
    if base["status"] != "ok" or not record.get("metrics"):
        return [{**base, "metric": None}]
    return [{**base, "metric": name, "value": m.get("value"), "best": m.get("best", m.get("value")),
             "higher_is_better": m.get("higher_is_better"), "stderr": m.get("stderr"), "split": m.get("split")}
            for name, m in record["metrics"].items()]


def _read(path: Path, label: str | None, rows: list, problems: list) -> bool:
    """Append the rows of one record; an unreadable one is named in ``problems`` and skipped."""
    try:
        rows.extend(cell_rows(read_record(path), path, label))
        return True
    except (ValueError, FileNotFoundError, KeyError, AttributeError, TypeError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        problems.append(message if str(path) in str(message) else f"{path}: {message}")
        return False


def _reason(failure: Path) -> str:
    try:
        return str(read_json(failure).get("reason") or "no reason recorded")
    except (ValueError, OSError, AttributeError) as e:
        return f"unreadable {failure}: {e}"


NAMES = ("label", "track", "method", "model", "task", "seed")


def _index_rows(index: Path, rows: list, problems: list) -> None:
    """One row per cell of a grid's index: its record's, its failure's, or why it has none. The
    index's names win over the record's (the grid's label for the cell)."""
    entries = read_json(index)
    if not isinstance(entries, dict) or not isinstance(entries.get("cells"), list):
        raise ValueError(f"{index}: not a grid index (expected an object with a 'cells' list)")
    cells_dir = index.parent.parent.parent / "cells"
    for entry in entries["cells"]:
        folder = cells_dir / entry["key"]
        names = {k: entry.get(k) for k in NAMES if entry.get(k) is not None}
        found = next((folder / f for f in (RESULT, FAILURE) if (folder / f).is_file()), None)
        start = len(rows)
        init_failure = cells_dir.parent / "inits" / str(entry.get("init")) / FAILURE
        if found is None and entry.get("init") and init_failure.is_file():  # its init step failed: it never ran
            rows.append({**names, "status": "failed", "reason": f"its init step failed: {_reason(init_failure)}",
                         "metric": None, "config_hash": entry["key"], "path": str(init_failure)})
        elif found is None:
            rows.append({**names, "status": "missing", "reason": "not run yet (or its job is still running)",
                         "metric": None, "config_hash": entry["key"], "path": str(folder)})
        elif not _read(found, entry["label"], rows, problems):  # an unreadable record is a row with why
            rows.append({**names, "status": "failed", "reason": f"unreadable record: {problems[-1]}",
                         "metric": None, "config_hash": entry["key"], "path": str(found)})
        elif found.name == FAILURE:  # the job's names are the command line's; the index's are the grid's
            rows[start:] = [{**r, **names, "config_hash": entry["key"]} for r in rows[start:]]


def collate(paths=(), out: str | Path | None = None, index: str | Path | None = None) -> pd.DataFrame:
    """Rows from a grid's index (``results/grids/<grid>/index.json``: its cells by key, with the grid's
    labels; a cell without a record is listed as missing, one whose job failed as failed with the
    reason from its ``failure.json``) and/or from record files and folders."""
    rows, problems = [], []
    if index is not None:
        _index_rows(Path(index), rows, problems)
    for path in find_results(paths):
        _read(path, None, rows, problems)
    for line in problems:
        print(f"adaptbench collate: skipped {line}", file=sys.stderr)
    extra = sorted({k for r in rows for k in r} - set(COLUMNS))
    frame = pd.DataFrame(rows, columns=COLUMNS + extra)
    if not frame.empty:
        frame = frame.sort_values(["label", "model", "task", "seed", "metric"], na_position="last", kind="stable")
    if out is not None:
        atomic_write_text(out, frame.to_csv(index=False))
    return frame


def completed(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of cells that finished with a score (what tables average)."""
    return frame[(frame["status"] == "ok") & frame["metric"].notna()]
