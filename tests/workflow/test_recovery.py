"""Issue 14, item 6: a real Snakemake run killed with kill -9, then the README's recovery (`make resume`:
refuse while anything of the run is alive, `snakemake --unlock`, rerun). No finished cell is recomputed
or lost, and the final table equals an uninterrupted run's, value for value (CPU training is bitwise
reproducible)."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.workflow
REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent
GRID = {"grid": "rec", "methods": ["full", "lora", {"name": "lora_r4", "method": "lora", "params": {"r": 4}}],
        "models": ["tiny-bert"], "tasks": ["syn_sentiment"], "seeds": [0],
        "train": {"epochs": 1, "batch_size": 16, "max_train_samples": 32, "max_eval_samples": 32, "lr": 1e-3}}
CELLS = 3


def env() -> dict:
    e = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    e["PATH"] = f"{Path(sys.executable).parent}:{e['PATH']}"
    return e


def workdir(tmp_path: Path, name: str) -> Path:
    work = tmp_path / name
    work.mkdir()
    (work / "grid.yaml").write_text(yaml.safe_dump(GRID))
    return work


def snakemake_cmd(work: Path, *args) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work),
            "--configfile", "grid.yaml", *args]


def finished(work: Path) -> dict[Path, int]:
    """result.json → mtime (ns): the cells that are done, as Snakemake sees it: the job wrote its result
    and Snakemake recorded the job as complete (it drops the output's marker in .snakemake/incomplete/,
    named by the base64 of the path). A kill between the two leaves the cell incomplete: it reruns."""
    markers = work / ".snakemake" / "incomplete"
    pending = {base64.b64decode(m.name).decode() for m in markers.glob("*")} if markers.is_dir() else set()
    return {p: p.stat().st_mtime_ns for p in (work / "results" / "cells").glob("*/result.json")
            if str(p.relative_to(work)) not in pending}


def table(work: Path) -> dict:
    """The tidy table's scores per cell, as the report reads them."""
    import pandas as pd

    frame = pd.read_csv(work / "results" / "grids" / "rec" / "tidy.csv")
    assert (frame["status"] == "ok").all(), frame[["label", "seed", "status", "reason"]]
    return {(r.label, r.seed, r.metric): (r.value, r.best) for r in frame.itertuples()}


def running(work: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "adaptbench", "running", str(work)], capture_output=True, text=True,
                          env=env())


def start_and_kill(work: Path, *, after_results: int, whole_group: bool) -> dict[Path, int]:
    """Run the grid on one core; once ``after_results`` cells are finished and a job of the next is running,
    kill -9 Snakemake (and, with ``whole_group``, its jobs too). Returns the cells finished at the kill."""
    proc = subprocess.Popen(snakemake_cmd(work, "--cores", "1"), cwd=work, env=env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    try:
        while time.time() < deadline:
            assert proc.poll() is None, "the run finished before it could be killed"
            done = finished(work)
            # a job of another cell has started: Snakemake has recorded the finished ones as complete
            jobs = [line for line in running(work).stdout.splitlines()
                    if "-m adaptbench" in line and not any(p.parent.name in line for p in done)]
            if len(done) >= after_results and jobs:
                break
            time.sleep(0.2)
        done = finished(work)
        if whole_group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        return done
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def resume(work: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "-f", str(REPO / "Makefile"), "-C", str(work), "resume", f"VENV={VENV}",
                           "GRID=grid.yaml", f"SNAKEMAKE_ARGS=-s {REPO / 'Snakefile'}", "CORES=2"],
                          capture_output=True, text=True, env=env(), timeout=900)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    work = workdir(tmp_path_factory.mktemp("recovery"), "clean")
    proc = subprocess.run(snakemake_cmd(work, "--cores", "2"), cwd=work, capture_output=True, text=True, env=env(),
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return table(work)


def test_kill_9_of_the_whole_run_then_make_resume(tmp_path, uninterrupted):
    """Killed with every job (a node lost, the terminal's process group killed) after one finished cell."""
    work = workdir(tmp_path, "group")
    done = start_and_kill(work, after_results=1, whole_group=True)
    assert len(done) >= 1
    locked = subprocess.run(snakemake_cmd(work, "--cores", "1"), cwd=work, capture_output=True, text=True, env=env())
    assert locked.returncode != 0 and "cannot be locked" in locked.stdout + locked.stderr  # why --unlock is needed
    assert running(work).returncode == 0  # nothing of the run is alive: unlocking is safe
    proc = resume(work)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert {p: finished(work)[p] for p in done} == done  # no finished cell recomputed
    assert len(finished(work)) == CELLS  # none lost
    assert table(work) == uninterrupted


def test_kill_9_of_snakemake_alone_waits_for_its_orphaned_job(tmp_path, uninterrupted):
    """Only Snakemake killed (its jobs keep running, orphaned): resume refuses until they are gone."""
    work = workdir(tmp_path, "orphan")
    done = start_and_kill(work, after_results=2, whole_group=False)
    refused = resume(work)
    if running(work).returncode == 1:  # the orphaned job is still alive
        assert refused.returncode != 0 and "process(es) of a run are alive here" in refused.stderr
    deadline = time.time() + 300
    while running(work).returncode != 0 and time.time() < deadline:  # "wait for them": the README's advice
        time.sleep(0.5)
    proc = resume(work)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert {p: finished(work)[p] for p in done} == done
    assert len(finished(work)) == CELLS
    assert table(work) == uninterrupted
