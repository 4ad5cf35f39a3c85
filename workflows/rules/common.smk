# Grid → cells, paths and resources. Pure Python + YAML: no torch at parse time.
import shlex
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)  # the adaptbench package of this checkout, installed or not
from adaptbench import grid as gridlib

GRID = config["grid"]
RESULTS = config.get("results_dir", "results")
REPORTS = config.get("reports_dir", "reports")
CELLS, UNAVAILABLE = gridlib.expand(config)
CELL = {(c.label, c.model, c.task, c.seed): c for c in CELLS}
CELL_DIR = f"{RESULTS}/{GRID}/{{method}}/{{model}}/{{task}}/seed{{seed}}"
RESOURCE_DEFAULTS = {"threads": 1, "gpu": 0, "mem_mb": 4000, "runtime": 60}

wildcard_constraints:
    method=r"[A-Za-z0-9_.-]+",
    model=r"[A-Za-z0-9_.-]+",
    task=r"[A-Za-z0-9_]+",
    seed=r"\d+",


def cell(wc):
    return CELL[(wc.method, wc.model, wc.task, int(wc.seed))]


def rule_resource(rule_name, key):
    """Per-rule resource from the grid's ``resources`` section (documented in the schema)."""
    return (config.get("resources", {}).get(rule_name) or {}).get(key, RESOURCE_DEFAULTS[key])


def runtime_for(rule_name):
    # each retry (SLURM profile: retries) gets proportionally more time
    return lambda wc, attempt: rule_resource(rule_name, "runtime") * attempt


def result_files():
    return [f"{RESULTS}/{GRID}/{c.label}/{c.model}/{c.task}/seed{c.seed}/result.json" for c in CELLS]


def report_targets():
    return [f"{REPORTS}/{GRID}/README.md"]
