"""How long Snakemake takes to build the DAG of a large fine-tuning grid, against a bare Snakefile of the
same job count and rule shapes (issue 15, goal 4: ours ≤ 1.15 × bare, at 10k and 20k cells).

For each N it writes, into a temporary folder:
  - ours:  a fine-tuning grid of N cells (methods × tiny-bert × four synthetic tasks × seeds), dry-run with
           this checkout's Snakefile (``snakemake -n --quiet rules host -s Snakefile -d <tmp> --configfile
           grid.yaml``: ``-q`` less the job-stats table, which gives the job count);
  - bare:  a Snakefile with the same jobs and rule shapes and nothing else: one ``finetune`` job per cell
           ({cell} wildcard → train.json, result.json, a log; params by plain dict lookups; the same
           resources), an index rule, a collate rule over every result, a report rule, ``all``.
The two dry-runs alternate, ``--repeats`` times each; it prints the wall (and CPU) seconds of every run
and the ratio of the medians, ours / bare, per N.

    python benchmarks/dag_build.py [--cells 10000 20000] [--repeats 2] [--profile]

``--profile`` also runs ours once under cProfile (top functions to stdout). Results go to stdout and
benchmarks/out/dag_build.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "out"
METHODS = ("full", "lora", "pissa", "kasa", "loldu")
TASKS = ("syn_sentiment", "syn_roles", "syn_sts", "syn_agreement")
TARGET = 1.15
ENV = str(REPO / "envs" / "adaptbench.yaml")  # the rules' conda: directive (unused by a dry-run without conda)


def grid_yaml(n: int) -> str:
    """A fine-tuning grid of exactly n cells when n is a multiple of len(METHODS) × len(TASKS)."""
    per_seed = len(METHODS) * len(TASKS)
    if n % per_seed:
        raise SystemExit(f"--cells must be multiples of {per_seed}")
    seeds = list(range(n // per_seed))
    return "\n".join([
        f"grid: dagbench{n}",
        "methods:",
        "  - name: full",
        "    train: {lr: 1.0e-4}",
        "  - name: lora",
        "    train: {lr: 2.0e-3}",
        "  - {name: pissa, params: {r: 8}}",
        "  - kasa",
        "  - loldu",
        "models: [tiny-bert]",
        f"tasks: [{', '.join(TASKS)}]",
        f"seeds: {json.dumps(seeds)}",
        "train: {epochs: 1, batch_size: 16, max_length: 32, max_train_samples: 64}",
        "task_train:",
        "  syn_sts: {lr: 5.0e-4}",
        "resources:",
        "  train: {threads: 1, mem_mb: 2000, runtime: 10}",
        "",
    ])


# The bare Snakefile: the jobs and rule shapes of ours (finetune.smk + report.smk + Snakefile's all): the same
# rules (init_adapter too, with no jobs here as in ours: no data-driven adapter in the grid), the same
# directives (input function, outputs, log, ten params, threads, six resources with a runtime function, conda,
# the same shell strings), with cells from a plain loop and params by dict lookups. What ours costs beyond it
# is our parse-time code: planning the grid, the index, the per-job functions.
BARE = r'''
import hashlib
import json
import shlex

N = {n}
METHODS = {methods!r}
TASKS = {tasks!r}
RESULTS = config.get("results_dir", "results")
REPORTS = config.get("reports_dir", "reports")
GRID = "bare{n}"
CELL_DIR = f"{{RESULTS}}/cells/{{{{cell}}}}"
GRID_DIR = f"{{RESULTS}}/grids/{{GRID}}"
# strings of the sizes ours passes (a method's resolved hyperparameters, the cell's training settings)
METHOD_PARAMS = json.dumps({{"alpha": 8.0, "init_a": "kaiming_uniform", "lora_dropout": 0.0, "r": 8,
                            "target_modules": ["query", "value", "q_proj", "v_proj"]}}, sort_keys=True, separators=(",", ":"))
TRAIN_PARAMS = json.dumps({{"batch_size": 16, "epochs": 1, "lr": 0.002, "max_length": 32, "max_train_samples": 64}},
                          sort_keys=True, separators=(",", ":"))
CELLS = {{}}
for i in range(N):
    method, task, seed = METHODS[i % len(METHODS)], TASKS[(i // len(METHODS)) % len(TASKS)], i // (len(METHODS) * len(TASKS))
    key = hashlib.sha256(str(i).encode()).hexdigest()[:16]
    CELLS[key] = {{"label": method, "method": method, "model": "tiny-bert", "task": task, "seed": seed,
                  "method_params": METHOD_PARAMS, "train_params": TRAIN_PARAMS}}
INDEX = json.dumps({{"grid": GRID, "kind": "finetune", "unavailable": {{}},
                    "cells": [{{"key": k, "track": "finetune", **{{f: v[f] for f in ("label", "method", "model", "task", "seed")}}}}
                              for k, v in CELLS.items()]}}, sort_keys=True, separators=(",", ":"))

INITS, INIT_OF = {{}}, {{}}  # this grid has no data-driven adapter: the init rule is there, with no jobs
INIT_FILE = f"{{RESULTS}}/inits/{{{{init}}}}/init.pt"

wildcard_constraints:
    cell=r"[0-9a-f]{{16}}",

wildcard_constraints:
    init=r"[0-9a-f]{{16}}",

localrules: index_grid, collate_results, report_tables


rule init_adapter:
    output:
        INIT_FILE,
    log:
        f"{{RESULTS}}/inits/{{{{init}}}}/init.log",
    params:
        method=lambda wc: INITS[wc.init]["method"],
        model=lambda wc: shlex.quote(INITS[wc.init]["model"]),
        task=lambda wc: INITS[wc.init]["task"],
        seed=lambda wc: INITS[wc.init]["seed"],
        method_params=lambda wc: shlex.quote(INITS[wc.init]["method_params"]),
        train_params=lambda wc: shlex.quote(INITS[wc.init]["train_params"]),
        data_dir="",
        python="python",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=lambda wc, attempt: 10 * attempt,
        gpu=0,
        slurm_extra="--signal=TERM@300 --requeue",
    conda:
        {env!r}
    shell:
        "{{params.python}} -m adaptbench init --method {{params.method}} --model {{params.model}}"
        " --task {{params.task}} --seed {{params.seed}} --method-params {{params.method_params}}"
        " --train-params {{params.train_params}} {{params.data_dir}} --threads {{threads}} --out {{output}}"
        " > {{log}} 2>&1 || {{{{ tail -n 1 {{log}} >&2; exit 2; }}}}"


rule all:
    input:
        [f"{{RESULTS}}/cells/{{k}}/result.json" for k in CELLS],
        f"{{REPORTS}}/{{GRID}}/README.md",
    default_target: True


rule finetune:
    input:
        init=lambda wc: [INIT_FILE.format(init=INIT_OF[wc.cell])] if wc.cell in INIT_OF else [],
    output:
        log_json=f"{{CELL_DIR}}/train.json",
        result=f"{{CELL_DIR}}/result.json",
    log:
        f"{{CELL_DIR}}/train.log",
    params:
        label=lambda wc: shlex.quote(CELLS[wc.cell]["label"]),
        method=lambda wc: CELLS[wc.cell]["method"],
        model=lambda wc: shlex.quote(CELLS[wc.cell]["model"]),
        task=lambda wc: CELLS[wc.cell]["task"],
        seed=lambda wc: CELLS[wc.cell]["seed"],
        method_params=lambda wc: shlex.quote(CELLS[wc.cell]["method_params"]),
        train_params=lambda wc: shlex.quote(CELLS[wc.cell]["train_params"]),
        data_dir="",
        init=lambda wc, input: "",
        python="python",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=lambda wc, attempt: 20 * attempt,
        gpu=0,
        checkpoint_every=0,
        keep_checkpoint="trainable",
        slurm_extra="--signal=TERM@300 --requeue",
    conda:
        {env!r}
    shell:
        "{{params.python}} -m adaptbench train {{params.init}} --method {{params.method}} --label {{params.label}}"
        " --model {{params.model}} --task {{params.task}} --seed {{params.seed}}"
        " --method-params {{params.method_params}} --train-params {{params.train_params}}"
        " --checkpoint-every {{resources.checkpoint_every}} --keep-checkpoint {{resources.keep_checkpoint}}"
        " --no-progress {{params.data_dir}} --threads {{threads}} --out $(dirname {{output.log_json}}) > {{log}} 2>&1"
        " || {{{{ tail -n 1 {{log}} >&2; exit 2; }}}}"


rule index_grid:
    output:
        f"{{GRID_DIR}}/index.json",
    log:
        f"{{GRID_DIR}}/index.log",
    params:
        index=INDEX,
    run:
        open(output[0], "w").write(params.index)


rule collate_results:
    input:
        index=f"{{GRID_DIR}}/index.json",
        results=[f"{{RESULTS}}/cells/{{k}}/result.json" for k in CELLS],
    output:
        f"{{GRID_DIR}}/tidy.csv",
    log:
        f"{{GRID_DIR}}/collate.log",
    params:
        python="python",
    conda:
        {env!r}
    shell:
        "{{params.python}} -m adaptbench collate --index {{input.index}} --out {{output}} > {{log}} 2>&1"


rule report_tables:
    input:
        cells=f"{{GRID_DIR}}/tidy.csv",
    output:
        f"{{REPORTS}}/{{GRID}}/README.md",
    log:
        f"{{GRID_DIR}}/report.log",
    params:
        command=lambda wc, input: f"python -m adaptbench report --cells {{shlex.quote(input.cells)}}",
    conda:
        {env!r}
    shell:
        "{{params.command}} > {{log}} 2>&1"
'''


def snakemake_cmd(snakefile: Path, workdir: Path, configfile: Path | None) -> list[str]:
    cmd = [str(Path(sys.executable).parent / "snakemake"), "-n", "--quiet", "rules", "host", "-s", str(snakefile), "-d", str(workdir)]
    if configfile is not None:
        cmd += ["--configfile", str(configfile)]
    cmd += ["--config", f"results_dir={workdir}/results", f"reports_dir={workdir}/reports"]
    return cmd


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def dry_run(cmd: list[str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system: steadier than wall on a shared machine) and output."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ADAPTBENCH_PROGRESS_SECONDS": "0"}
    cpu0, t0 = _child_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    seconds, cpu = time.perf_counter() - t0, _child_cpu() - cpu0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return seconds, cpu, proc.stdout + proc.stderr


def job_count(output: str) -> int | None:
    """The 'total' line of Snakemake's job-stats table (printed under -n --quiet rules host)."""
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "total" and parts[1].isdigit():
            return int(parts[1])
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", type=int, nargs="+", default=[10000, 20000])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--profile", action="store_true", help="also run ours once under cProfile")
    p.add_argument("--keep", action="store_true", help="keep the temporary folders (paths printed)")
    args = p.parse_args()

    results = []
    for n in args.cells:
        root = Path(tempfile.mkdtemp(prefix=f"adaptbench-dag{n}-"))
        try:
            ours_dir, bare_dir = root / "ours", root / "bare"
            ours_dir.mkdir()
            bare_dir.mkdir()
            (ours_dir / "grid.yaml").write_text(grid_yaml(n))
            (bare_dir / "Snakefile").write_text(BARE.format(n=n, methods=METHODS, tasks=TASKS, env=ENV))
            ours = snakemake_cmd(REPO / "Snakefile", ours_dir, ours_dir / "grid.yaml")
            bare = snakemake_cmd(bare_dir / "Snakefile", bare_dir, None)
            times = {"ours": [], "bare": []}
            cpus = {"ours": [], "bare": []}
            jobs = {}
            for r in range(args.repeats):
                for name, cmd in (("ours", ours), ("bare", bare)) if r % 2 == 0 else (("bare", bare), ("ours", ours)):
                    seconds, cpu, output = dry_run(cmd)
                    times[name].append(round(seconds, 2))
                    cpus[name].append(round(cpu, 2))
                    jobs[name] = job_count(output)
                    print(f"N={n} {name}: {seconds:.2f} s wall, {cpu:.2f} s CPU ({jobs[name]} jobs)", flush=True)
            if jobs["ours"] != jobs["bare"]:
                print(f"N={n}: job counts differ: ours {jobs['ours']}, bare {jobs['bare']}", flush=True)
            ratio = statistics.median(times["ours"]) / statistics.median(times["bare"])
            cpu_ratio = statistics.median(cpus["ours"]) / statistics.median(cpus["bare"])
            verdict = "ok" if ratio <= TARGET else f"over the {TARGET} target"
            print(f"N={n}: ours {times['ours']} s, bare {times['bare']} s; ratio of medians {ratio:.3f} ({verdict}); "
                  f"CPU ours {cpus['ours']} s, bare {cpus['bare']} s, ratio {cpu_ratio:.3f}", flush=True)
            results.append({"cells": n, "jobs": jobs, "ours_s": times["ours"], "bare_s": times["bare"],
                            "ratio": round(ratio, 3), "ours_cpu_s": cpus["ours"], "bare_cpu_s": cpus["bare"],
                            "cpu_ratio": round(cpu_ratio, 3)})
            if args.profile:
                stats = root / "ours.prof"
                cmd = [sys.executable, "-m", "cProfile", "-o", str(stats), *ours]
                dry_run(cmd)
                import pstats

                pstats.Stats(str(stats)).sort_stats("cumulative").print_stats(40)
                pstats.Stats(str(stats)).sort_stats("tottime").print_stats(25)
        finally:
            if args.keep:
                print(f"kept: {root}")
            else:
                shutil.rmtree(root, ignore_errors=True)
    summary = {"cores": os.cpu_count(), "snakemake": subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), "--version"], capture_output=True, text=True).stdout.strip(),
        "target_ratio": TARGET, "runs": results}
    print(json.dumps(summary, indent=1))
    OUT.mkdir(exist_ok=True)
    (OUT / "dag_build.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
