"""Per-cell fixed cost: the wall time of a fine-tuning cell beyond its training and scoring compute.

A one-step MiniLM cell (32 examples, batch 32, one epoch, 32 dev examples) run the way the workflow runs
it, in fresh processes, two ways, alternating over repeats so that machine load hits both alike:

  two jobs  `adaptbench train --no-score` then `adaptbench evaluate` (the workflow before issue 15: each
            process imports torch/transformers, loads the model and the data)
  one job   `adaptbench train`, which scores the model it trained in the same process (ADAPTBENCH_FORKSERVER=0)
  forked    the same job as a fork of the warm server (adaptbench/forkserver.py; the workflow now on one
            machine): the client starts the server once per run (timed apart, "server start"), every job after
            that forks from it instead of importing torch/transformers/the job code

fixed cost = process wall time − the training loop's own time (train.json wall_seconds, which includes
the per-epoch dev score) − the final scoring time (result.json eval_info.seconds). Also printed: the
import time of torch, transformers and the job module in a fresh interpreter, the floor of any design
that starts one process per cell.

    python benchmarks/cell_overhead.py [--repeats 3] [--model minilm]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = {"epochs": 1, "batch_size": 32, "max_train_samples": 32, "max_eval_samples": 32, "max_length": 64,
         "lr": 2e-3, "keep_checkpoint": "trainable"}
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
           TOKENIZERS_PARALLELISM="false", ADAPTBENCH_FORKSERVER="0")
# this run's own server, kept warm between the alternating repeats (Snakemake starts jobs back to back)
FORKED = dict(ENV, ADAPTBENCH_FORKSERVER="1", ADAPTBENCH_BENCH_RUN=str(os.getpid()), ADAPTBENCH_FORKSERVER_IDLE="600")


def timed(cmd: list[str], env: dict = ENV) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def import_seconds(module: str) -> float:
    return timed([sys.executable, "-c", f"import {module}"])


def train_cmd(model: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "adaptbench", "train", "--method", "lora", "--model", model, "--task",
            "syn_sentiment", "--seed", "0", "--train-params", json.dumps(TRAIN), "--threads", "1", "--no-progress",
            "--out", str(out), *extra]


def compute_seconds(out: Path, result: Path) -> float:
    loop = json.loads((out / "train.json").read_text())["train_info"]["wall_seconds"]
    return loop + json.loads(result.read_text())["eval_info"]["seconds"]


def two_jobs(model: str, root: Path) -> tuple[float, float]:
    out = root / "two"
    wall = timed(train_cmd(model, out, "--no-score"))
    wall += timed([sys.executable, "-m", "adaptbench", "evaluate", "--train-dir", str(out), "--out",
                   str(out / "result.json"), "--threads", "1"])
    return wall, compute_seconds(out, out / "result.json")


def one_job(model: str, root: Path) -> tuple[float, float]:
    out = root / "one"
    wall = timed(train_cmd(model, out))
    return wall, compute_seconds(out, out / "result.json")


def forked(model: str, root: Path) -> tuple[float, float]:
    out = root / "forked"
    wall = timed(train_cmd(model, out), FORKED)
    return wall, compute_seconds(out, out / "result.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="minilm")
    args = ap.parse_args()

    imports = {m: statistics.median(import_seconds(m) for _ in range(args.repeats))
               for m in ("torch", "transformers", "adaptbench.tracks.finetune.job")}
    for module, seconds in imports.items():
        print(f"import {module:34s} {seconds:6.2f} s (fresh interpreter, median of {args.repeats})")

    with tempfile.TemporaryDirectory() as tmp:  # the first forked job starts this run's server
        start, compute = forked(args.model, Path(tmp))
        print(f"server start (once per run, with its first job): {start - compute:6.2f} s beyond that job's compute")
    rows = {"two jobs": [], "one job": [], "forked": []}
    for _ in range(args.repeats):
        for name, run in (("two jobs", two_jobs), ("one job", one_job), ("forked", forked)):
            with tempfile.TemporaryDirectory() as tmp:
                wall, compute = run(args.model, Path(tmp))
                rows[name].append((wall, compute))
    fixed = {}
    for name, runs in rows.items():
        wall = statistics.median(w for w, _ in runs)
        compute = statistics.median(c for _, c in runs)
        fixed[name] = statistics.median(w - c for w, c in runs)
        print(f"{name:9s} wall {wall:6.2f} s   compute {compute:6.2f} s   fixed cost {fixed[name]:6.2f} s per cell")
    print(f"fixed cost one job / two jobs: {fixed['one job'] / fixed['two jobs']:.3f}"
          f"  (saved {fixed['two jobs'] - fixed['one job']:.2f} s per cell)")
    print(f"fixed cost forked / one job: {fixed['forked'] / fixed['one job']:.3f}"
          f"  (forked: {fixed['forked']:.2f} s per cell; two jobs → forked {fixed['forked'] / fixed['two jobs']:.3f})")


if __name__ == "__main__":
    main()
