"""``adaptbench compare my_method.py --against <grid>``: a new method against a stored grid, training only
the new method's cells. Fine-tuning grids take an adapter or an optimizer; LLM grids an adapter (fine-tuned and
scored by lm-eval with the stored row's settings); TTA grids a TTA method, run on the stored row's streams (same source settings, scenario, shifts, severities and seed; a source model the store
lacks is trained first by the train_source job, which the protocol does not see beyond its settings).

The stored grid is read from ``results/grids/<grid>/index.json`` and its records. The new method gets the
same cells as one stored row (``--like``; default ``lora`` for an adapter, ``full`` for an optimizer, where
the grid has it): each stored record's ``run_info`` gives the model, task, seed, training settings and data
folder its job was given, and the new cell is that configuration with the method (an adapter) or
``train.optimizer`` (an optimizer) and its hyperparameters replaced (``--method-params``;
``--train-params`` overrides training settings outside the protocol, e.g. the learning rate). Cells are
stored by content (``results/cells/<config hash>/``), so a cell computed before is reused, never retrained.
The fine-tuning jobs run in this process (``tracks.finetune.job.train``, which also scores the cell), so
a method loaded from the researcher's file is registered where it runs.

Protocols are checked, not assumed: a new cell's ``protocol_hash`` must equal the ``--like`` cell's of the
same model, task and seed, or the comparison stops and names the protocol fields that differ (the new cells
stay stored). A stored row under another protocol (a grid entry with its own budget) is left out by name.

Printed: the rank of the new method per task and on the average over tasks; the paired difference
(new − stored, on the seeds both ran) against every stored row with its 95 % t-interval and the paired
t-test's p-value (``scipy.stats.ttest_rel``), "within noise" where the interval covers 0; and its place on
the Pareto fronts of score against trainable parameters and against optimizer-state bytes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from adaptbench import leaderboard as lb
from adaptbench.config import RUN_CONTROL, SINCE_STORED, TrainConfig
from adaptbench.results import config_hash, folder_name, read_record


def protocol_diff(ours, theirs, prefix: str = "") -> list[str]:
    """Dotted paths of the fields where two protocols differ, with both values."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        out = []
        for key in sorted(set(ours) | set(theirs)):
            out += protocol_diff(ours.get(key), theirs.get(key), f"{prefix}{key}.")
        return out
    return [] if ours == theirs else [f"{prefix.rstrip('.')}: new {ours!r} vs stored {theirs!r}"]


def stored_cells(results: Path, grid: str) -> tuple[dict, list[tuple[dict, dict]]]:
    """A grid's index and its (index entry, record) pairs of finished cells."""
    indexes = lb.grid_indexes(results)
    if grid not in indexes:
        raise lb.unknown_grid(grid, results)
    index, cells = indexes[grid], []
    for entry in index["cells"]:
        path = results / "cells" / entry["key"] / "result.json"
        if path.is_file():
            record = read_record(path)
            if record.get("status", "ok") == "ok":
                cells.append((entry, record))
    if not cells:
        raise ValueError(f"grid '{grid}' has no stored results under {results}/cells; run it first "
                         f"(snakemake --configfile workflows/grids/{grid}.yaml) or check out its stored records")
    return index, cells


@dataclass
class Comparison:
    name: str
    grid: str
    like: str
    trained: list = field(default_factory=list)  # config hashes trained by this call
    reused: list = field(default_factory=list)  # config hashes found stored
    scores: pd.DataFrame | None = None
    ranks: dict = field(default_factory=dict)  # task | "Avg" → (rank, of how many)
    paired: list = field(default_factory=list)
    pareto: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def text(self) -> str:
        lines = [f"{self.name} against grid '{self.grid}' (cells as '{self.like}', same protocol): "
                 f"{len(self.trained)} cell(s) trained, {len(self.reused)} reused"]
        lines += [f"note: {n}" for n in self.notes]
        lines.append("rank (1 = best): " + "; ".join(f"{t} {r} of {n}" for t, (r, n) in self.ranks.items()))
        if self.paired:
            frame = pd.DataFrame([{"vs": p["vs"], "task": p["task"], "n": p["n"],
                                   "new − stored": f"{p['mean']:+.2f}",
                                   "95% interval": "—" if math.isnan(p["lo"]) else f"[{p['lo']:+.2f}, {p['hi']:+.2f}]",
                                   "p (paired t)": "—" if math.isnan(p["p"]) else f"{p['p']:.3g}",
                                   "verdict": p["verdict"]} for p in self.paired])
            lines += ["paired differences on shared seeds (score × 100 where a fraction):",
                      frame.to_markdown(index=False, disable_numparse=True)]
        for axis, info in self.pareto.items():
            where = "on the front" if info["on_front"] else f"dominated by {', '.join(info['dominated_by'])}"
            lines.append(f"Pareto (score vs {axis}): {where}; front: {', '.join(info['front'])}")
        return "\n".join(lines)


def _where(entry: dict) -> tuple:
    """A cell's place in its grid (the index entry's model, task, seed): where two rows meet."""
    return entry["model"], entry["task"], entry["seed"]


def _new_config(name: str, params: dict, info: dict, train_overrides: dict, data_dir, model_source):
    """The new method's cell configuration on a stored cell's inputs, as ``train`` will compute it. An
    adapter replaces the stored cell's method; an optimizer its ``train.optimizer`` (the adapter stays)."""
    from adaptbench.registry import get_method
    from adaptbench.tracks.finetune.grid import cell_config

    spec = get_method(name)
    resolved = asdict(spec.make_config(params))  # a bad --method-params fails here, in one line
    # a stored cell that predates a setting ran with its old value (SINCE_STORED), not today's default
    train = {**SINCE_STORED, **{k: v for k, v in (info.get("train") or {}).items() if k not in RUN_CONTROL},
             **train_overrides}
    if spec.family == "optimizer":  # the grid's optimizer axis passes its params as given: so does this
        method, method_params = info["method"], info.get("method_params") or {}
        train.update(optimizer=name, optimizer_params=dict(params))
    else:
        method, method_params = name, resolved
    TrainConfig.from_dict(train)  # a bad --train-params fails here, in one line
    job = {"method": method, "method_params": method_params, "model": model_source or info["model"],
           "task": info["task"], "seed": int(info["seed"]), "train_params": train, "data_dir": data_dir}
    config = cell_config(method=method, method_params=method_params, model=job["model"], task=job["task"],
                         seed=job["seed"], train=train, data_dir=data_dir)
    return config_hash(config), job


def run_new(jobs: list[tuple[str, dict]], results: Path, what: str, run_one) -> tuple[list, list]:
    """Run each (key, job) whose result is not stored (``run_one(job, folder)`` → the config hash the job computed);
    returns (trained, reused) keys. A job that names its cell otherwise than we do is a bug, said as one."""
    trained, reused = [], []
    for key, job in jobs:
        folder = results / "cells" / key
        if (folder / "result.json").is_file() and read_record(folder / "result.json").get("status") == "ok":
            reused.append(key)
            continue
        computed = run_one(job, folder)
        if computed != key:  # the job names its cell as we do, or the store would lie
            (folder / "result.json").unlink(missing_ok=True)
            raise ValueError(f"cell {key}: the {what} job computed config hash {computed}; report this as a bug "
                             "(compare and the job disagree on the cell's configuration)")
        trained.append(key)
    return trained, reused


def run_cells(jobs: list[tuple[str, dict]], results: Path, label: str, threads=None, progress=False):
    """Fine-tune and score each new cell (tracks.finetune.job.train); returns (trained, reused) keys."""
    from adaptbench.tracks.finetune import job as finetune

    return run_new(jobs, results, "training", lambda job, folder: config_hash(finetune.train(
        **job, out_dir=folder, label=label, threads=threads, progress=progress)["config"]))


def _local_source(source: dict, data_dir) -> dict:
    """A stored (portable) TTA source entry with its folders found again: a data folder stored by name is
    ``--data-dir`` itself or the folder of that name inside it."""
    out = dict(source)
    for key in ("data_dir", "checkpoint"):
        name = source.get(key)
        if not name:
            continue
        found = [p for p in ([Path(data_dir), Path(data_dir) / name] if data_dir else [])
                 if p.exists() and folder_name(str(p)) == name]
        if not found:
            raise ValueError(f"source '{source.get('name')}' read a folder named '{name}' ({key}); pass --data-dir "
                             "<that folder or the folder holding it>")
        out[key] = str(found[0])
    return out


def _tta_job(name: str, params: dict, info: dict, data_dir):
    """The new TTA method's cell on a stored cell's stream: same source, scenario, shifts, severities and seed."""
    from adaptbench.registry import get_method
    from adaptbench.tta.grid import cell_config

    get_method(name).make_config(params)  # a bad --method-params fails here, in one line
    source = _local_source(info["source"], data_dir)
    job = {"method": name, "method_params": dict(params), "source": source, "scenario": info["scenario"],
           "shifts": list(info["shifts"]), "severities": list(info["severities"]), "seed": int(info["seed"])}
    return config_hash(cell_config(**job)), job


def run_tta_cells(jobs: list[tuple[str, dict]], results: Path, label: str, threads=None):
    """Adapt on each new cell's stream, training a source model first where this store lacks it
    (results/sources/<key>/, as the train_source rule). Returns (trained, reused, sources trained)."""
    from adaptbench.tta.grid import source_key
    from adaptbench.tta.runner import adapt
    from adaptbench.tta.streams import train_source_job

    sources = []

    def run_one(job, folder):
        source_dir = results / "sources" / source_key(job["source"])
        if not (source_dir / "source.json").is_file():
            train_source_job(job["source"], source_dir, threads)
            sources.append(source_dir.name)
        return adapt(**job, source_dir=source_dir, out_path=folder / "result.json", label=label,
                     threads=threads)["config_hash"]

    trained, reused = run_new(jobs, results, "adapt", run_one)
    return trained, reused, sources


def _llm_job(name: str, params: dict, record: dict, data_dir, model_source):
    """The new adapter's LLM cell on a stored cell's inputs: its model, training set, seed, training settings and
    lm-eval settings, with the method replaced."""
    from adaptbench.registry import get_method
    from adaptbench.tracks.llm.grid import cell_config

    info = record["run_info"]
    resolved = asdict(get_method(name).make_config(params))  # a bad --method-params fails here, in one line
    train = {k: v for k, v in (info.get("train") or {}).items() if k not in RUN_CONTROL}
    evaluation = dict((record.get("protocol") or {}).get("eval") or {})
    job = {"method": name, "method_params": resolved, "model": model_source or info["model"], "task": info["task"],
           "seed": int(info["seed"]), "train_params": train, "evaluation": evaluation, "data_dir": data_dir}
    config = cell_config(method=name, method_params=resolved, model=job["model"], task=job["task"], seed=job["seed"],
                         train=train, data_dir=data_dir, evaluation=evaluation)
    return config_hash(config), job


def run_llm_cells(jobs: list[tuple[str, dict]], results: Path, label: str, threads=None):
    """Fine-tune and score (lm-eval) each new LLM cell; returns (trained, reused)."""
    from adaptbench.tracks.llm.job import run_cell

    return run_new(jobs, results, "LLM", lambda job, folder: run_cell(
        **job, out_dir=folder, label=label, threads=threads)["config_hash"])


def compare(target: str, against: str, results="results", method: str | None = None, like: str | None = None,
            method_params: dict | None = None, train_params: dict | None = None, data_dir: str | None = None,
            model_source: str | None = None, threads: int | None = None, progress: bool = False) -> Comparison:
    from adaptbench.registry import get_method
    from adaptbench.user_methods import resolve_method

    name = resolve_method(target, method)
    family = get_method(name).family
    results = Path(results)
    index, cells = stored_cells(results, against)
    kind = index.get("kind", "finetune")
    fits = {"finetune": ("adapter", "optimizer"), "tta": ("tta",), "llm": ("adapter",)}
    if kind not in fits:
        raise ValueError(f"grid '{against}' is a {kind} grid; compare handles fine-tuning, TTA and LLM grids so far")
    if family not in fits[kind]:
        a = "an" if family[0] in "aeiou" else "a"
        raise ValueError(f"'{name}' is {a} {family} method; a {kind} grid compares {' and '.join(fits[kind])} methods")
    labels = sorted({e["label"] for e, _ in cells})
    if name in labels:
        raise ValueError(f"grid '{against}' already has a row '{name}'; rename the method file (its stem is the name)")
    default = {"adapter": "lora", "optimizer": "full", "tta": "tent"}[family]  # an optimizer trains the full model
    like = like or (default if default in labels else labels[0])
    if like not in labels:
        raise ValueError(f"--like: grid '{against}' has no stored row '{like}'; rows: {', '.join(labels)}")
    template = [(e, r) for e, r in cells if e["label"] == like]
    if kind == "tta":  # the like row's streams (source, scenario, shifts, severities, seed): every TTA cell's inputs
        jobs = [_tta_job(name, dict(method_params or {}), r["run_info"], data_dir) for _, r in template]
        trained, reused, sources = run_tta_cells(jobs, results, name, threads)
        out = Comparison(name, against, like, trained, reused)
        if sources:
            out.notes.append(f"trained {len(sources)} source model(s) this store lacked ({', '.join(sources)}): "
                             "the same settings, so the same protocol")
        return place(out, jobs, template, cells, results, name, column="grid")
    stored_dir = {r["run_info"].get("data_dir") for _, r in template} - {None}
    if stored_dir and data_dir is None:
        raise ValueError(f"grid '{against}' read its data from a folder named '{sorted(stored_dir)[0]}'; "
                         "pass --data-dir <that folder>")
    if data_dir is not None and folder_name(data_dir) not in stored_dir:
        raise ValueError(f"--data-dir {data_dir}: the grid's cells read a folder named "
                         f"{sorted(stored_dir) or 'none (the hub or synthetic data)'}, not '{folder_name(data_dir)}'")
    if kind == "llm":  # the like row's model, training set, seeds, training and lm-eval settings
        jobs = [_llm_job(name, dict(method_params or {}), r, data_dir, model_source) for _, r in template]
        trained, reused = run_llm_cells(jobs, results, name, threads)
        return place(Comparison(name, against, like, trained, reused), jobs, template, cells, results, name)
    jobs = [_new_config(name, dict(method_params or {}), r["run_info"], dict(train_params or {}), data_dir, model_source)
            for _, r in template]
    for (_, stored), (_, job) in zip(template, jobs):  # a budget change is another protocol: refused before training
        budget = TrainConfig.from_dict(job["train_params"]).protocol()
        if stored.get("protocol") and budget != stored["protocol"].get("budget"):
            raise ValueError(f"refusing to compare across protocols: {job['task']} / seed {job['seed']}: "
                             + "; ".join(protocol_diff(budget, stored["protocol"]["budget"], "budget.")))
    trained, reused = run_cells(jobs, results, name, threads, progress)
    return place(Comparison(name, against, like, trained, reused), jobs, template, cells, results, name)


def place(out: Comparison, jobs, template, cells, results: Path, name: str, column: str = "record") -> Comparison:
    """The new cells against the stored rows of the same protocol: ranks, paired statistics, Pareto positions.
    Columns are the records' tasks (an LLM record has one per lm-eval task), or the grid's (``column="grid"``: a
    TTA grid's scenarios, whose streams share the suite's name)."""
    new_records = [read_record(results / "cells" / key / "result.json") for key, _ in jobs]
    for (_, stored), new in zip(template, new_records):  # the protocol is checked, never assumed
        if new["protocol_hash"] != stored["protocol_hash"]:
            info = new["run_info"]
            raise ValueError(f"refusing to compare across protocols: {info['model']} / {info['task']} / seed "
                             f"{info['seed']}: " + "; ".join(protocol_diff(new["protocol"], stored["protocol"])))
    ours = {_where(e): new["protocol_hash"] for (e, _), new in zip(template, new_records)}
    same = [(e, r) for e, r in cells if ours.get(_where(e)) == r["protocol_hash"]]
    other = [e["label"] for e, r in cells if _where(e) in ours and ours[_where(e)] != r["protocol_hash"]]
    for label in sorted(set(other)):
        out.notes.append(f"row '{label}': {other.count(label)} cell(s) ran under another protocol, left out")
    def task(e, row):
        return e["task"] if column == "grid" else row["task"]

    rows = [{**row, "task": task(e, row)} for e, r in same for row in lb.record_scores(r, "", e["label"])]
    rows += [{**row, "task": task(e, row)} for (e, _), new, (key, _) in zip(template, new_records, jobs)
             for row in lb.record_scores(new, key, name)]
    out.scores = pd.DataFrame(rows)
    summarise(out, out.scores, name)
    return out


def summarise(out: Comparison, scores: pd.DataFrame, name: str) -> None:
    """Ranks, paired statistics and Pareto positions of ``name`` among the rows of ``scores``."""
    from scipy import stats

    higher = bool(scores["higher_is_better"].iloc[0])
    tasks = sorted(scores["task"].unique())
    means = scores.groupby(["label", "task"])["score"].mean().unstack("task")
    ranked = {t: means[t].dropna() for t in tasks}
    complete = means.dropna()
    if len(tasks) > 1 and name in complete.index:
        ranked["Avg"] = complete.mean(axis=1)
    for column, values in ranked.items():
        if name in values.index:
            better = (values > values[name]) if higher else (values < values[name])
            out.ranks[column] = (int(better.sum()) + 1, len(values))

    per_seed = scores.pivot_table(index=["label", "seed"], columns="task", values="score")
    avg = per_seed.dropna().mean(axis=1) if len(tasks) > 1 else None
    for label in sorted(set(scores["label"]) - {name}):
        for task, series in [(t, per_seed[t]) for t in tasks] + ([("Avg", avg)] if avg is not None else []):
            if name not in series.index.get_level_values(0) or label not in series.index.get_level_values(0):
                continue
            pair = pd.concat([series[name], series[label]], axis=1, keys=["new", "old"]).dropna()
            if pair.empty:
                continue
            diff = pair["new"] - pair["old"]
            s = lb.interval(diff)
            p = float(stats.ttest_rel(pair["new"], pair["old"]).pvalue) if len(pair) > 1 and diff.std() > 0 else math.nan
            if len(pair) < 2:
                verdict = "one seed: no interval"
            elif s["lo"] <= 0 <= s["hi"]:
                verdict = "within noise"
            else:
                verdict = "better" if (s["mean"] > 0) == higher else "worse"
            out.paired.append({"vs": label, "task": task, "n": len(pair), "mean": s["mean"], "lo": s["lo"],
                               "hi": s["hi"], "p": p, "verdict": verdict})

    score = complete.mean(axis=1) if len(tasks) > 1 else means[tasks[0]].dropna()
    for axis, column in (("trainable parameters", "trainable_params"), ("optimizer-state bytes", "optimizer_state_bytes")):
        cost = scores.groupby("label")[column].median()
        points = [(label, float(cost[label]), float(score[label])) for label in score.index
                  if label in cost.index and pd.notna(cost[label])]
        if not any(p[0] == name for p in points):
            continue
        front = lb.pareto_front(points, higher)
        mine = next(p for p in points if p[0] == name)
        dominated = sorted(p[0] for p in points if p[0] != name and p[1] <= mine[1]
                           and (p[2] >= mine[2] if higher else p[2] <= mine[2]) and (p[1], p[2]) != (mine[1], mine[2]))
        out.pareto[axis] = {"on_front": name in front, "front": sorted(front), "dominated_by": dominated}
