# Grid → cells, paths and resources, for every track. Pure Python + YAML: no torch at parse time.
#
# Cells are stored by what they compute, not by the grid that asked for them:
#   results/cells/<config hash>/     one cell: result.json (+ train.json, logs; checkpoints git-ignored)
#   results/grids/<grid>/index.json  the grid's cells by key, with its readable labels
#   results/grids/<grid>/tidy.csv    one row per cell × metric (adaptbench.collate)
# Two grids that contain the same cell share its folder; a new grid reuses every stored cell.
import os
import shlex
import sys
from pathlib import Path

from adaptbench import grid as gridlib

# The interpreter running Snakemake has adaptbench installed (make setup); under
# --software-deployment-method conda the environment's own python is the right one.
_conda = any(str(m).lower().endswith("conda") for m in workflow.deployment_settings.deployment_method)
PYTHON = "python" if _conda else shlex.quote(sys.executable)

# Jobs on this machine fork from one warm process that imported torch and the job code once (adaptbench/forkserver.py;
# a cluster job, SLURM_JOB_ID set, runs in its own process). ADAPTBENCH_FORKSERVER=0 turns it off.
os.environ.setdefault("ADAPTBENCH_FORKSERVER", "1")

GRID = config["grid"]
RESULTS = config.get("results_dir", "results")
REPORTS = config.get("reports_dir", "reports")
# PLAN (the Snakefile's gridlib.load_plan) validated every name, setting and hyperparameter: bad input
# failed there, in one line. Harmless oddities are printed once, when the DAG is built.
for _warning in PLAN.warnings:
    print(f"adaptbench: warning: {_warning}", file=sys.stderr)
CELLS = {c.key: c for c in PLAN.cells}
UNAVAILABLE = PLAN.unavailable
if config.get("methods_path"):  # jobs import the same files (adaptbench.user_methods.load_from_env)
    from adaptbench.user_methods import METHODS_PATH_ENV, method_files

    os.environ[METHODS_PATH_ENV] = os.pathsep.join(str(p.resolve()) for p in method_files(config["methods_path"]))
CELL_DIR = f"{RESULTS}/cells/{{cell}}"
GRID_DIR = f"{RESULTS}/grids/{GRID}"
RESOURCE_DEFAULTS = {"threads": 1, "gpu": 0, "mem_mb": 4000, "runtime": 60}

wildcard_constraints:
    cell=r"[0-9a-f]{16}",


# SLURM site settings come from the user's environment (profiles/slurm/config.yaml), never the grid.
SITE = {
    "slurm_account": os.environ.get("ADAPTBENCH_SLURM_ACCOUNT"),
    "qos": os.environ.get("ADAPTBENCH_SLURM_QOS"),
    "constraint": os.environ.get("ADAPTBENCH_SLURM_CONSTRAINT"),
    # SIGTERM 5 minutes before the time limit (and on preemption): the training loop saves a resumable
    # checkpoint and exits 143; --requeue puts the job back in the queue, and its rerun resumes.
    "slurm_extra": " ".join(filter(None, [os.environ.get("ADAPTBENCH_SLURM_PREEMPT", "--signal=TERM@300 --requeue"),
                                          os.environ.get("ADAPTBENCH_SLURM_EXTRA")])),
}


def site_resources(rule_name):
    """Account, partition, QoS, ... for a rule; GPU rules use ADAPTBENCH_SLURM_PARTITION, CPU rules
    ADAPTBENCH_SLURM_CPU_PARTITION (falling back to the former)."""
    gpu = rule_resource(rule_name, "gpu") > 0
    partition = os.environ.get("ADAPTBENCH_SLURM_PARTITION")
    if not gpu:
        partition = os.environ.get("ADAPTBENCH_SLURM_CPU_PARTITION", partition)
    return {k: v for k, v in {**SITE, "slurm_partition": partition}.items() if v}


def data_dir_flag():
    return f"--data-dir {shlex.quote(str(Path(config['data_dir']).resolve()))}" if config.get("data_dir") else ""


def cell(wc):
    return CELLS[wc.cell]


def rule_resource(rule_name, key):
    """Per-rule resource from the grid's ``resources`` section (documented in the schema)."""
    return (config.get("resources", {}).get(rule_name) or {}).get(key, RESOURCE_DEFAULTS[key])


def runtime_for(rule_name):
    # each retry (SLURM profile: retries) gets proportionally more time
    return lambda wc, attempt: rule_resource(rule_name, "runtime") * attempt


def result_files():
    return [f"{RESULTS}/cells/{key}/result.json" for key in CELLS]


def report_targets():
    return [f"{REPORTS}/{GRID}/README.md"]


def report_command(cells):
    return (f"{PYTHON} -m adaptbench report --cells {shlex.quote(cells)}"
            f" --grid-json {shlex.quote(gridlib.as_json(config))} --unavailable {shlex.quote(gridlib.as_json(UNAVAILABLE))}"
            f" --out-dir {shlex.quote(f'{REPORTS}/{GRID}')} --results {shlex.quote(RESULTS)}")


def partial_report():
    """After a failed run: collate what finished and failed, and report it (one line on the terminal)."""
    import subprocess

    index, tidy = f"{GRID_DIR}/index.json", f"{GRID_DIR}/tidy.csv"
    current = gridlib.index_json(PLAN, GRID, TRACK.kind)
    if not os.path.exists(index) or open(index).read().strip() != current:  # the run may have stopped before it
        gridlib.write_index(index, current)
    steps = [f"{PYTHON} -m adaptbench collate --index {shlex.quote(index)} --out {shlex.quote(tidy)}",
             report_command(tidy)]
    with open(f"{GRID_DIR}/partial_report.log", "w") as log:
        for step in steps:
            proc = subprocess.run(step, shell=True, stdout=log, stderr=subprocess.PIPE, text=True)
            log.write(proc.stderr)
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or [f"see {log.name}"])[-1]
                print(f"adaptbench: no report of the finished cells: {last}", file=sys.stderr)
                return
    import csv

    with open(tidy, newline="") as f:
        status = {r["config_hash"]: r["status"] for r in csv.DictReader(f)}
    failed, missing = (sum(s == state for s in status.values()) for state in ("failed", "missing"))
    not_run = f" ({missing} not run)" if missing else ""
    print(f"adaptbench: {failed} of {len(status)} cells failed{not_run}; report of the others, the failed ones "
          f"listed with their reasons: {REPORTS}/{GRID}/README.md", file=sys.stderr)


def watch_progress(every=float(os.environ.get("ADAPTBENCH_PROGRESS_SECONDS", 60))):
    """A line on the terminal every minute while cells run: how many are done or failed, and an ETA from
    the mean time per finished cell (Snakemake's own 'N of M steps' counts jobs, not cells, and has no
    ETA). ADAPTBENCH_PROGRESS_SECONDS=0 turns it off."""
    import threading
    import time

    todo = [key for key in CELLS if not os.path.exists(f"{RESULTS}/cells/{key}/result.json")]
    if not todo or every <= 0:
        return
    start = time.time()

    def since_start(path):
        return os.path.exists(path) and os.path.getmtime(path) >= start  # an old failure is not this run's

    def tick():
        while True:
            time.sleep(every)
            done = sum(since_start(f"{RESULTS}/cells/{key}/result.json") for key in todo)
            failed = sum(since_start(f"{RESULTS}/cells/{key}/failure.json") for key in todo)
            minutes = (time.time() - start) / 60
            left = (len(todo) - done - failed) * minutes / done if done else None
            failures = f", {failed} failed" if failed else ""
            eta = f"; about {max(left, 1):.0f} min left" if left is not None else ""
            print(f"adaptbench: {done} of {len(todo)} cells done{failures} after {minutes:.0f} min{eta}",
                  file=sys.stderr, flush=True)
            if done + failed >= len(todo):
                return

    threading.Thread(target=tick, daemon=True).start()


onstart:
    watch_progress()
