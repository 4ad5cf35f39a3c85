"""The result record of one cell, the same for every track, written by one function.

A record (schema 2) is one JSON object:

  schema_version  2
  track           finetune | tta | pretrain | ... (the plug-in that produced it)
  status          ok | failed
  reason          one line, when failed
  config_hash     hash of the cell's full specification (what it computes); names its folder
  protocol_hash   hash of what decides comparability: model + weights, task + version + data hashes,
                  training budget, evaluation settings, seed — NOT the method or its hyperparameters.
                  Two methods under one protocol share it; the leaderboard joins on it.
  protocol        the fields protocol_hash is taken over (so a mismatch can be explained field by field)
  run_info        method, resolved hyperparameters, model / data identity, seed, code and package versions
  train_info      steps, wall time, memory, parameter counts, optimizer-state bytes, loss curve, hooks
  metrics         {name: {value, higher_is_better, split, stderr?, best?}}

Nothing in a record names a path of the machine that produced it: a model from a package is its package
name + version + weights sha256, a local folder its name + sha256 (see ``identity``).
Schema-1 records (before the plug-in tracks) are read through ``upgrade_v1``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

SCHEMA_VERSION = 2
REPO_ROOT = Path(__file__).resolve().parent.parent


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temp file in the same folder, then rename: a killed job never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        _umask_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_torch_save(obj, path: str | Path) -> None:
    """torch.save through a temp file and a rename. The archive is written through a file object, so
    its inner folder name does not depend on the temp name: equal tensors give byte-equal files."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        _umask_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask_mode(path) -> None:
    """mkstemp creates 0600 files; give results the mode the user's umask asks for (colleagues on a
    shared cluster read them)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def config_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def git_state() -> dict:
    def git(*args):
        return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").stdout.strip())
        return {"commit": head.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}


def package_versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("adaptbench", "torch", "transformers", "peft", "numpy", "scikit-learn", "scipy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def read_json(path: str | Path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text; expected a JSON file") from None


# ---- provenance without machine paths -------------------------------------------------------------

def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def folder_name(path: str | Path | None) -> str | None:
    """A local folder as the record names it: its last component, never the machine's absolute path."""
    return None if path is None else Path(str(path)).expanduser().resolve().name or str(path)


def portable_source(path: str | Path, root: str | Path) -> str:
    """``root/a/b.tsv`` → ``<root name>/a/b.tsv``: where a file came from, readable on any machine."""
    path, root = Path(path).resolve(), Path(root).resolve()
    try:
        return f"{root.name}/{path.relative_to(root).as_posix()}"
    except ValueError:
        return path.name


# ---- the record ------------------------------------------------------------------------------------

STATUSES = ("ok", "failed")


def metric(value, higher_is_better: bool, split: str | None = None, stderr: float | None = None,
           **extra) -> dict:
    """One metric entry: ``{value, higher_is_better, split, stderr?, ...}`` (``best`` for the best epoch)."""
    entry = {"value": None if value is None else float(value), "higher_is_better": bool(higher_is_better),
             "split": split}
    if stderr is not None:
        entry["stderr"] = float(stderr)
    entry.update({k: v for k, v in extra.items() if v is not None})
    return entry


def make_record(*, track: str, config: dict, protocol: dict, run_info: dict, train_info: dict | None = None,
                metrics: dict | None = None, status: str = "ok", reason: str | None = None, **extra) -> dict:
    """The one constructor of a result record, for every track. ``config`` is the cell's full
    specification (its hash names the cell), ``protocol`` what makes two cells comparable."""
    if status not in STATUSES:
        raise ValueError(f"record status must be one of {STATUSES}, got {status!r}")
    for name, entry in (metrics or {}).items():
        if not (isinstance(entry, dict) and {"value", "higher_is_better"} <= set(entry)):
            raise ValueError(f"metric {name!r}: expected {{value, higher_is_better, split}}, got {entry!r}")
    return {
        "schema_version": SCHEMA_VERSION,
        "track": track,
        "status": status,
        "reason": reason,
        "config_hash": config_hash(config),
        "protocol_hash": config_hash(protocol),
        "protocol": protocol,
        "run_info": {**run_info, "git": git_state(), "packages": package_versions()},
        "train_info": train_info or {},
        "metrics": metrics or {},
        **extra,
    }


def failure_record(*, track: str, config: dict, reason: str, run_info: dict | None = None) -> dict:
    """What a job that could not finish leaves beside its (absent) result (``failure.json``): the
    reason, in one line. It has no protocol: a failed cell is comparable with nothing."""
    record = make_record(track=track, config=config, protocol={}, run_info=run_info or {}, status="failed",
                         reason=" ".join(str(reason).split()))
    return {**record, "protocol_hash": None, "protocol": None}


def upgrade_v1(record: dict) -> dict:
    """A schema-1 record (``metrics: {last: {name: v}, best: {name: v}}``, no track) in schema 2's shape.
    Direction of metrics comes from the metric's name (errors and perplexity are lower-is-better)."""
    info = record.get("run_info", {})
    family = info.get("family")
    track = "tta" if family == "tta" else "pretrain" if "perplexity" in record.get("metrics", {}).get("last", {}) \
        else "finetune"
    last, best = record.get("metrics", {}).get("last", {}), record.get("metrics", {}).get("best", {})
    metrics = {name: metric(v, higher_is_better=not _lower_is_better(name), split="validation",
                            best=best.get(name)) for name, v in last.items()}
    out = {k: v for k, v in record.items() if k not in ("metrics", "schema_version")}
    out.update({"schema_version": SCHEMA_VERSION, "upgraded_from": 1, "track": track,
                "status": record.get("status", "ok"), "reason": record.get("reason"),
                "config_hash": info.get("config_hash"), "protocol_hash": None, "protocol": None,
                "metrics": metrics})
    out.setdefault("train_info", record.get("tta_info", {}))
    return out


def _lower_is_better(name: str) -> bool:
    return name.split("/")[0] in ("error", "error_mean", "perplexity", "loss", "val_loss")


def read_record(path: str | Path) -> dict:
    """A result record of any schema version, as schema 2; one-line errors naming the file."""
    record = read_json(path)
    if not isinstance(record, dict):
        raise ValueError(f"{path}: a result record is a JSON object, got a {type(record).__name__}")
    version = record.get("schema_version")
    if version == 1:
        return upgrade_v1(record)
    if version != SCHEMA_VERSION:
        raise ValueError(f"{path}: unknown schema_version {version!r} (this adaptbench reads 1 and {SCHEMA_VERSION})")
    return record
