"""The TTA job: a trained source model meets a stream of shifted test batches and adapts online.

Reads top to bottom: source model → method.attach → (method's source-side preparation) → the
scenario's stream of (shift, severity) segments → per batch ``forward_and_adapt`` → online
predictions → error per shift × severity and the mean → result.json.

A scenario is data (the grid's ``scenarios`` entries), never code in a method:
  mode        episodic: reset to the source before every shift (the TTA papers' "reset each shift");
              continual: one stream through all shifts in order, never reset (CoTTA's setting);
              mixed: all shifts of a severity shuffled into one stream (mixed domains, SAR's "mixed shifts").
  batch_size  64 down to 1.
  max_samples a deterministic subset of the test set per shift (keeps batch size 1 affordable on CPU).
  label_shift null (i.i.d. order), or {order: sorted} / {order: dirichlet, alpha: 0.1}: classes arrive
              in a non-i.i.d. order (SAR's "online imbalanced label distribution shift"; RoTTA/LAME's
              Dirichlet stream); {imbalance: ρ} also subsamples the stream to a long-tailed class prior
              (largest / smallest class = ρ) before ordering.
The metric is the online error: each sample is scored by the prediction made when its batch arrived.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from adaptbench.registry import get_method
from adaptbench.results import atomic_write_json, make_record, metric
from adaptbench.tta.grid import TRACK, cell_config, portable

MODES = ("episodic", "continual", "mixed")


@dataclass(frozen=True)
class Scenario:
    name: str
    mode: str = "episodic"
    batch_size: int = 64
    label_shift: dict = field(default_factory=dict)
    max_samples: int | None = None  # cap on the samples per shift (a deterministic subset), for bs 1 on CPU

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"scenario '{self.name}': mode must be one of {MODES}, got {self.mode!r}")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ValueError(f"scenario '{self.name}': batch_size must be a positive integer, got {self.batch_size!r}")
        unknown = set(self.label_shift) - {"order", "alpha", "imbalance"}
        if unknown:
            raise ValueError(f"scenario '{self.name}': unknown label_shift key(s) {sorted(unknown)}")
        if self.label_shift.get("order", "iid") not in ("iid", "sorted", "dirichlet"):
            raise ValueError(f"scenario '{self.name}': label_shift.order must be iid, sorted or dirichlet")

    @classmethod
    def from_dict(cls, d: dict) -> "Scenario":
        return cls(name=d["name"], mode=d.get("mode", "episodic"), batch_size=int(d.get("batch_size", 64)),
                   label_shift=dict(d.get("label_shift") or {}), max_samples=d.get("max_samples"))


@dataclass
class Segment:
    """Samples that arrive together: one (shift, severity) in episodic/continual, all shifts in mixed."""

    index: np.ndarray  # rows of the clean test set, in arrival order
    shift: np.ndarray  # per sample: the shift name
    severity: np.ndarray  # per sample: the severity


def long_tail_subset(labels: np.ndarray, imbalance: float, rng: np.random.Generator) -> np.ndarray:
    """Keep n_c = n_max · ρ^(−rank_c/(C−1)) samples of class c (the long-tail profile of LDAM/SAR)."""
    classes = np.unique(labels)
    order = rng.permutation(classes)
    counts = np.bincount(labels, minlength=classes.max() + 1)
    n_max = counts[classes].min()
    keep = []
    for rank, c in enumerate(order):
        n_c = max(1, int(round(n_max * imbalance ** (-rank / max(1, len(classes) - 1)))))
        keep.append(rng.permutation(np.flatnonzero(labels == c))[:n_c])
    return np.sort(np.concatenate(keep))


def order_samples(index: np.ndarray, labels: np.ndarray, label_shift: dict, rng: np.random.Generator) -> np.ndarray:
    """Arrival order of ``index``: i.i.d. shuffle, sorted by class, or Dirichlet class mixtures over time."""
    order = label_shift.get("order", "iid")
    if order == "iid":
        return rng.permutation(index)
    if order == "sorted":
        perm = rng.permutation(index)
        return perm[np.argsort(labels[perm], kind="stable")]
    # dirichlet: split the stream into slots; each class spreads over the slots by Dir(alpha) weights,
    # so small alpha concentrates a class in few slots (RoTTA's non-i.i.d. sampling)
    alpha = float(label_shift.get("alpha", 0.1))
    classes = np.unique(labels[index])
    slots = max(1, len(index) // 16)
    slot_of = np.empty(len(index), dtype=np.int64)
    for c in classes:
        members = np.flatnonzero(labels[index] == c)
        weights = rng.dirichlet(np.full(slots, alpha))
        slot_of[members] = rng.choice(slots, size=len(members), p=weights)
    position = np.lexsort((rng.random(len(index)), labels[index], slot_of))  # by slot, then class runs
    return index[position]


def build_segments(labels: np.ndarray, scenario: Scenario, shifts: list[str], severities: list[int],
                   seed: int) -> list[Segment]:
    rng = np.random.default_rng(seed)
    base = np.arange(len(labels))
    if scenario.max_samples and scenario.max_samples < len(base):
        base = np.sort(rng.permutation(base)[: scenario.max_samples])
    if scenario.label_shift.get("imbalance"):
        base = base[long_tail_subset(labels[base], float(scenario.label_shift["imbalance"]), rng)]
    segments = []
    for severity in severities:
        if scenario.mode == "mixed":
            idx = np.concatenate([base] * len(shifts))
            tag = np.repeat(np.array(shifts, dtype=object), len(base))
            perm = order_samples(np.arange(len(idx)), labels[idx], scenario.label_shift, rng)
            segments.append(Segment(idx[perm], tag[perm], np.full(len(idx), severity)))
            continue
        for shift in shifts:
            idx = order_samples(base, labels, scenario.label_shift, rng)
            segments.append(Segment(idx, np.full(len(idx), shift, dtype=object), np.full(len(idx), severity)))
    return segments


def online_errors(records: list[tuple[str, int, bool]]) -> dict[str, float]:
    """Error (fraction wrong) per shift × severity, per severity, and the mean over shifts (TTA tables)."""
    metrics = {}
    shifts = sorted({r[0] for r in records})
    severities = sorted({r[1] for r in records})
    for sev in severities:
        per_shift = []
        for shift in shifts:
            wrong = [not r[2] for r in records if r[0] == shift and r[1] == sev]
            if wrong:
                metrics[f"error/{shift}/{sev}"] = float(np.mean(wrong))
                per_shift.append(metrics[f"error/{shift}/{sev}"])
        metrics[f"error_mean/{sev}"] = float(np.mean(per_shift))
    metrics["error_mean"] = float(np.mean([metrics[f"error_mean/{s}"] for s in severities]))
    return metrics


def run_stream(method, stream, segments: list[Segment], scenario: Scenario, labels: np.ndarray) -> tuple[list, dict]:
    """The online loop. ``stream.inputs(index, shift, severity)`` yields the model inputs of a batch."""
    records, kept, batches, t0 = [], [], 0, time.time()
    for s, seg in enumerate(segments):
        if scenario.mode == "episodic" and s > 0:
            method.reset()
        for start in range(0, len(seg.index), scenario.batch_size):
            idx = seg.index[start:start + scenario.batch_size]
            shift, sev = seg.shift[start:start + scenario.batch_size], seg.severity[start:start + scenario.batch_size]
            inputs = stream.inputs(idx, shift, sev)
            logits = method.forward_and_adapt(inputs)
            if not torch.isfinite(logits).all():
                raise FloatingPointError(f"non-finite logits in segment {s} batch {start // scenario.batch_size}")
            pred = logits.argmax(-1).cpu().numpy()
            records.extend(zip(shift.tolist(), sev.tolist(), (pred == labels[idx]).tolist()))
            if "kept" in method.last_stats:
                kept.append(method.last_stats["kept"] / len(idx))
            batches += 1
    stats = {"batches": batches, "samples": len(records), "seconds": round(time.time() - t0, 2),
             "kept_fraction": float(np.mean(kept)) if kept else None}
    return records, stats


def adapt(*, method: str, method_params: dict | None, source_dir: str | Path, source: dict, scenario: dict,
          shifts: list[str], severities: list[int], seed: int, out_path: str | Path,
          data_dir: str | None = None, label: str | None = None, threads: int | None = None) -> dict:
    """One cell of a TTA grid: method × source × scenario × seed → result.json."""
    from adaptbench.tta import streams

    spec = get_method(method)
    if spec.family != "tta":
        raise ValueError(f"method '{method}' belongs to the {spec.family} family, not to test-time adaptation")
    method_obj = spec.build(method_params)
    scen = Scenario.from_dict(scenario)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed)

    stream = streams.open_stream(source, source_dir, data_dir, shifts, seed)
    segments = build_segments(stream.labels, scen, list(shifts), list(severities), seed)
    streams.prepare_before_attach(method_obj, stream)
    method_obj.attach(stream.model)
    streams.prepare_after_attach(method_obj, stream)
    records, stats = run_stream(method_obj, stream, segments, scen, stream.labels)
    metrics = online_errors(records)

    config = cell_config(method=method, method_params=dict(method_params or {}), source=source, scenario=scenario,
                         shifts=shifts, severities=severities, seed=seed)
    protocol = {"track": TRACK, "source": portable(source), "suite": stream.suite, "data": stream.data_info,
                "scenario": scenario, "shifts": list(shifts), "severities": list(severities), "seed": seed}
    result = make_record(
        track=TRACK, config=config, protocol=protocol,
        run_info={
            "method": method, "method_params": dict(method_params or {}), "source": portable(source),
            "scenario": scenario, "shifts": list(shifts), "severities": list(severities), "seed": seed,
            "label": label or method,
            "family": "tta",
            "model": source["name"],
            "task": stream.suite,
            "paper": {"title": spec.paper.title, "arxiv": spec.paper.arxiv},
            "synthetic": stream.synthetic,
            "data": stream.data_info,
            "source_clean_error": stream.clean_error,
            "threads": torch.get_num_threads(),
            "facets": {"scenario": scen.name, "mode": scen.mode, "batch_size": scen.batch_size,
                       "source_clean_error": stream.clean_error, "kept_fraction": stats.get("kept_fraction"),
                       "seconds": stats["seconds"]},
        },
        train_info=stats,
        metrics={name: metric(value, False, name.partition("/")[2] or "all") for name, value in metrics.items()},
    )
    atomic_write_json(out_path, result)
    return result
