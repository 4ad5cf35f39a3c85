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

GRID = config["grid"]
RESULTS = config.get("results_dir", "results")
REPORTS = config.get("reports_dir", "reports")
PLAN = gridlib.plan(config)  # validates every name, setting and hyperparameter: bad input fails here
CELLS = {c.key: c for c in PLAN.cells}
UNAVAILABLE = PLAN.unavailable
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
