"""The Snakemake workflow: dry-runs of every shipped grid, a tiny real run, reruns, overrides, SLURM."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.workflow
REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def env(**extra):
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}:{e['PATH']}"
    e.update(extra)
    return e


def snakemake(*args, cwd=REPO, extra_env=None, timeout=600):
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True,
                          env=env(**(extra_env or {})), timeout=timeout)


def job_counts(output: str) -> dict[str, int]:
    block = output.split("Job stats:", 1)[1]
    return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)\s*$", block, re.M)}


def test_default_grid_dry_run(tmp_path):
    proc = snakemake("-n", "--config", f"results_dir={tmp_path}/results", f"reports_dir={tmp_path}/reports")
    assert proc.returncode == 0, proc.stderr
    counts = job_counts(proc.stdout)
    assert counts["finetune"] == 18  # 2 methods × 3 tasks × 2 seeds + scratch (3 × 2): one job per cell
    assert "evaluate_glue" not in counts  # scored in the training job


@pytest.mark.parametrize("grid", sorted(p.name for p in (REPO / "workflows" / "grids").glob("*.yaml")))
def test_every_shipped_grid_dry_runs(grid, tmp_path):
    cfg = yaml.safe_load((REPO / "workflows" / "grids" / grid).read_text())
    proc = snakemake("-n", "--configfile", f"workflows/grids/{grid}", "--config", f"results_dir={tmp_path}/results",
                     f"reports_dir={tmp_path}/reports")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    kind = cfg.get("kind", "finetune")
    if kind == "tta":
        from adaptbench.tta import grid as ttagrid

        unavailable = ttagrid.unavailable_sources(cfg)  # e.g. MNIST / CIFAR-10-C without data_dir
        expected = len(cfg["methods"]) * (len(cfg["sources"]) - len(unavailable)) * len(cfg["scenarios"])
        counts = job_counts(proc.stdout)
        assert counts.get("adapt_stream", 0) == expected * len(cfg["seeds"]) - len(cfg.get("exclude", []))
        assert counts.get("train_source", 0) == len(cfg["sources"]) - len(unavailable)
        assert counts["report_tables"] == 1
        return
    if kind == "llm":  # zero-shot rows and data-dependent training sets: the plan is the truth
        from adaptbench import grid as gridlib

        counts = job_counts(proc.stdout)
        assert counts.get("llm_cell", 0) == len(gridlib.plan(cfg).cells) and counts["report_tables"] == 1, counts
        return
    if kind == "pretrain":  # each exclude rule here names one optimizer × size
        expected = (len(cfg["methods"]) * len(cfg["models"]) - len(cfg.get("exclude", []))) * len(cfg["tasks"])
        assert job_counts(proc.stdout)["pretrain"] == expected * len(cfg["seeds"])
        return
    n_methods, n_models = len(cfg["methods"]) * len(cfg.get("optimizers") or [None]), len(cfg["models"])
    expected = n_methods * n_models * len(cfg["tasks"]) * len(cfg["seeds"])
    expected -= sum(len(cfg["tasks"]) * len(cfg["seeds"]) for _ in cfg.get("exclude", []))
    assert job_counts(proc.stdout)["finetune"] == expected


def test_lora_roberta_grid_on_slurm_lists_40_gpu_training_jobs(tmp_path):
    proc = snakemake("--profile", "slurm", "-n", "--configfile", "workflows/grids/lora_roberta_base_glue.yaml",
                     "--config", f"results_dir={tmp_path}/results", f"reports_dir={tmp_path}/reports")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert job_counts(proc.stdout)["finetune"] == 8 * 5
    blocks = proc.stdout.split("rule ")
    finetune_blocks = [b for b in blocks if b.startswith("finetune:")]
    assert len(finetune_blocks) == 40
    # the job trains and scores: its time limit is the grid's train + evaluate runtimes (960 + 60 min)
    assert all("gpu=1" in b and "runtime=1020" in b and "mem_mb=32000" in b for b in finetune_blocks)


def error_lines(proc) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines()
            if line.strip() and "Using workflow specific profile" not in line
            and "is extended by additional config specified via the command line" not in line]  # Snakemake's notices


def test_bad_grid_value_fails_at_parse_time_in_one_line():
    proc = snakemake("-n", "--config", "seeds=[-1]")
    assert proc.returncode != 0
    assert error_lines(proc) == ["adaptbench: error: --config seeds: seeds/0: -1 is not valid; expected >= 0"]
    proc = snakemake("-n", "--config", "methods=[lorra]")
    lines = error_lines(proc)
    assert len(lines) == 1 and "unknown adapter method 'lorra'. Did you mean: lora" in lines[0]


def test_a_misspelt_grid_key_is_one_line_not_the_schema(tmp_path):
    """Before: `seed:` instead of `seeds:` printed 244 lines, the whole schema (issue 14, item 10)."""
    grid = {k: v for k, v in TINY.items() if k != "seeds"}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump({**grid, "seed": [0]}))
    proc = run_in(tmp_path, "-n")
    lines = error_lines(proc)
    assert proc.returncode != 0 and len(lines) == 1, proc.stdout + proc.stderr
    assert lines[0].startswith("adaptbench: error: grid.yaml:7: unknown key 'seed'; did you mean 'seeds'?")


TINY = {"grid": "tiny", "methods": ["full", "lora"], "models": ["tiny-bert"], "tasks": ["syn_sentiment", "syn_sts"],
        "seeds": [0], "train": {"epochs": 1, "batch_size": 16, "max_train_samples": 32, "max_eval_samples": 32,
                                "lr": 1.0e-3}}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("wf")
    (work / "grid.yaml").write_text(yaml.safe_dump(TINY))
    proc = snakemake("-s", str(REPO / "Snakefile"), "-d", str(work), "--configfile", str(work / "grid.yaml"),
                     "--cores", "2", cwd=work)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return work


def run_in(work, *args):
    return snakemake("-s", str(REPO / "Snakefile"), "-d", str(work), "--configfile", str(work / "grid.yaml"),
                     *args, cwd=work)


def test_tiny_grid_end_to_end(tiny_run):
    report = tiny_run / "reports" / "tiny"
    assert (report / "README.md").exists() and (report / "score_vs_params.png").exists()
    table = (report / "table.md").read_text()
    assert "| full " in table and "| lora " in table
    assert len(list((tiny_run / "results" / "cells").rglob("result.json"))) == 4
    index = json.loads((tiny_run / "results" / "grids" / "tiny" / "index.json").read_text())
    assert {(c["label"], c["task"]) for c in index["cells"]} == {(m, t) for m in ("full", "lora")
                                                                  for t in ("syn_sentiment", "syn_sts")}
    for c in index["cells"]:  # a cell's folder is named by the hash its record carries
        record = json.loads((tiny_run / "results" / "cells" / c["key"] / "result.json").read_text())
        assert record["config_hash"] == c["key"] and record["schema_version"] == 2
    committed = (tiny_run / "results" / "cells").rglob("*.json")
    assert not [p for p in committed if str(tiny_run) in p.read_text() or "/tmp/" in p.read_text()]


def test_another_grid_reuses_the_stored_cells(tiny_run):
    """Cells are stored by what they compute: a new grid with a cell already computed trains nothing for it,
    and a report-only change (title) reruns only the report."""
    other = {**TINY, "grid": "other", "methods": ["lora"], "report": {"title": "another title"}}
    (tiny_run / "other.yaml").write_text(yaml.safe_dump(other))
    proc = snakemake("-s", str(REPO / "Snakefile"), "-d", str(tiny_run), "--configfile", str(tiny_run / "other.yaml"),
                     "-n", cwd=tiny_run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    counts = job_counts(proc.stdout)
    assert "finetune" not in counts, counts
    assert counts["report_tables"] == 1


def test_second_run_does_nothing(tiny_run):
    proc = run_in(tiny_run, "-n")
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr


def test_report_only_regenerates_the_tables_from_stored_results(tiny_run):
    """`make report`: collate and report again, train nothing, even with a cell missing."""
    shutil.rmtree(tiny_run / "reports")
    report_only = {"ADAPTBENCH_REPORT_ONLY": "1"}
    proc = snakemake("-s", str(REPO / "Snakefile"), "-d", str(tiny_run), "--configfile", str(tiny_run / "grid.yaml"),
                     "-n", "--config", "seeds=[0,1]", "--forcerun", "collate_results", cwd=tiny_run, extra_env=report_only)
    counts = job_counts(proc.stdout)
    assert "finetune" not in counts and counts["report_tables"] == 1, counts
    proc = snakemake("-s", str(REPO / "Snakefile"), "-d", str(tiny_run), "--configfile", str(tiny_run / "grid.yaml"),
                     "--cores", "1", "--forcerun", "collate_results", cwd=tiny_run, extra_env=report_only)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| full " in (tiny_run / "reports" / "tiny" / "table.md").read_text()
    assert "Nothing to be done" in run_in(tiny_run, "-n").stderr + run_in(tiny_run, "-n").stdout


def test_adding_a_seed_runs_only_the_new_cells(tiny_run):
    proc = run_in(tiny_run, "-n", "--config", "seeds=[0,1]")
    counts = job_counts(proc.stdout)
    assert counts["finetune"] == 4  # 2 methods × 2 tasks × the new seed


def test_hyperparameter_override_reruns_only_that_method(tiny_run):
    proc = run_in(tiny_run, "-n", "--config", "methods=[full,{name: lora, params: {r: 4}}]")
    assert proc.returncode == 0, proc.stderr[-2000:]
    counts = job_counts(proc.stdout)
    assert counts["finetune"] == 2  # only the lora cells: their params changed


# --keep-going with failed cells: tests/test_reliability.py (one run, a failure of every kind).


def test_slurm_profile_sbatch_options(tmp_path):
    """Drive the real SLURM executor plugin against a fake sbatch that records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "sbatch.log"
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\necho "$@" >> {log}\nexit 1\n')
    for tool in ("sacct", "squeue", "scancel", "sinfo", "sacctmgr", "sshare", "scontrol"):
        (bin_dir / tool).write_text("#!/bin/sh\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    grid = {**TINY, "grid": "slurm_probe", "methods": ["lora"], "tasks": ["syn_sentiment"],
            "resources": {"train": {"gpu": 1, "threads": 4, "mem_mb": 12000, "runtime": 30}, "evaluate": {"runtime": 5}}}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    proc = subprocess.run(
        [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--profile", str(REPO / "profiles" / "slurm"),
         "--configfile", str(tmp_path / "grid.yaml"), "--retries", "0", "--slurm-init-seconds-before-status-checks", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env=env(PATH=f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
                ADAPTBENCH_SLURM_ACCOUNT="proj123", ADAPTBENCH_SLURM_PARTITION="gpu-a100",
                ADAPTBENCH_SLURM_CPU_PARTITION="cpu"))
    sbatch = log.read_text()
    assert proc.returncode != 0  # the fake sbatch refuses every job
    assert "-A proj123" in sbatch and "-p gpu-a100" in sbatch
    assert "--gpus=1" in sbatch and "-t 35" in sbatch and "--mem 12000" in sbatch  # train + scoring minutes
    assert "--cpus-per-task=4" in sbatch
    assert "--signal=TERM@300" in sbatch and "--requeue" in sbatch  # preemption: save, requeue, resume


@pytest.mark.parametrize("grid", ["demo.yaml", "tta_demo.yaml", "pretrain_cpu.yaml"])  # one per grid kind
def test_lint_is_clean(grid):
    proc = snakemake("--lint", "--configfile", f"workflows/grids/{grid}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_default_profile_cannot_override_slurm_settings():
    """Snakemake applies profiles/default on SLURM runs too, key by key: it must not carry these."""
    default = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    forbidden = {"cores", "jobs", "executor", "resources", "default-resources", "set-resources", "set-threads", "retries"}
    assert not forbidden & set(default)
    slurm = yaml.safe_load((REPO / "slurm" / "config.yaml").read_text())
    assert slurm["executor"] == "slurm" and slurm["retries"] >= 1
    assert "default-resources" not in slurm  # site settings come from the user's environment


TINY_TTA = {"grid": "tiny_tta", "kind": "tta", "methods": ["source", "tent"],
            "sources": [{"name": "mlp", "kind": "image", "dataset": "digits", "arch": "mlp_ln", "epochs": 3}],
            "shifts": {"image": ["gaussian_noise", "contrast"]}, "severities": [5],
            "scenarios": [{"name": "episodic", "batch_size": 64}], "seeds": [0],
            "report": {"title": "tiny TTA", "claims": ["eata"]}}


def test_tiny_tta_grid_end_to_end(tmp_path):
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(TINY_TTA))
    proc = run_in(tmp_path, "--cores", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = sorted((tmp_path / "results" / "cells").rglob("result.json"))
    assert len(results) == 2
    text = (tmp_path / "reports" / "tiny_tta" / "README.md").read_text()
    assert "| source" in text and "| tent" in text and "gaussian_noise" in text
    assert "Orderings checked on our streams" in text


TINY_PRETRAIN = {"grid": "tiny_pt", "kind": "pretrain", "methods": ["adamw", {"name": "lion", "train": {"lr": 1e-4}}],
                 "models": ["llama_tiny"], "tasks": ["syn_text"], "seeds": [0],
                 "train": {"steps": 6, "batch_size": 4, "seq_len": 32, "eval_every": 3, "eval_batches": 2,
                           "max_docs": 400}}


def test_tiny_pretrain_grid_end_to_end(tmp_path):
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(TINY_PRETRAIN))
    proc = run_in(tmp_path, "--cores", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = (tmp_path / "reports" / "tiny_pt" / "table.md").read_text()
    assert "| adamw " in table and "| lion " in table and "opt. state" in table
    cells = (tmp_path / "results" / "grids" / "tiny_pt" / "tidy.csv").read_text()
    assert "ppl" in cells


def test_tta_grid_with_every_source_unavailable_still_reports_why(tmp_path):
    proc = snakemake("--configfile", "workflows/grids/tta_cifar10c.yaml", "--cores", "1", "--config",
                     f"results_dir={tmp_path}/results", f"reports_dir={tmp_path}/reports")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = (tmp_path / "reports" / "tta_cifar10c" / "README.md").read_text()
    assert "Sources not run" in text and "cifar10_wrn28" in text and "needs data_dir" in text
    assert "16.2" in text  # CoTTA's continual CIFAR10-C error printed beside 'not run here'
