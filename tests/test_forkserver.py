"""The warm fork server (adaptbench/forkserver.py): a job run through it is the client's process in every way that
matters (its stdout, stderr, folder, environment, exit code and signals) and computes what a plain process computes;
the server exits when idle, and the client stays out of the way where it should."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adaptbench import forkserver

REPO = Path(__file__).resolve().parents[1]
CLIENT = ("import sys; from pathlib import Path; from adaptbench import forkserver as f; "
          "sys.exit(f.call(f._connect(Path(sys.argv[1])), sys.argv[2:]))")


@pytest.fixture
def server(tmp_path):
    path = tmp_path / "fs.sock"
    cwd = os.getcwd()
    os.chdir(REPO)  # the server imports the target from the repository, as `python -m` does there
    try:
        conn = forkserver._start_and_connect(path, target="tests.forkserver_target:main", wait=60, idle=2.0)
    finally:
        os.chdir(cwd)
    assert conn is not None, (Path(f"{path}.log").read_text() if Path(f"{path}.log").exists() else "no log")
    conn.close()
    return path


def client(path, *argv, cwd, env=None, **kw):
    out, err = open(cwd / "out.txt", "w"), open(cwd / "err.txt", "w")
    return subprocess.Popen([sys.executable, "-c", CLIENT, str(path), *argv], cwd=cwd, stdout=out, stderr=err,
                            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, **kw)


def test_a_job_is_the_clients_process(server, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    proc = client(server, "hello", "3", cwd=work, env={"MARK": "xyz"})
    assert proc.wait(timeout=60) == 3  # the job's exit code
    out = (work / "out.txt").read_text()
    assert f"hello cwd={work} MARK=xyz forked=1" in out  # its folder and environment, marked as forked
    assert (work / "err.txt").read_text() == "to stderr\n"  # its stderr
    pid = int(out.split("pid=")[1].split()[0])
    assert pid != proc.pid  # a fork of the server, not the client


def test_a_crash_is_a_traceback_and_exit_1(server, tmp_path):
    proc = client(server, "crash", cwd=tmp_path)
    assert proc.wait(timeout=60) == 1
    assert "RuntimeError: boom" in (tmp_path / "err.txt").read_text()


def started(proc, folder) -> None:
    deadline = time.monotonic() + 30
    while "started" not in (folder / "out.txt").read_text():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)


def test_termination_reaches_the_job(server, tmp_path):
    proc = client(server, "sleep", cwd=tmp_path)
    started(proc, tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM  # the job died of it, as a shell reports


def test_a_killed_client_takes_its_job_with_it(server, tmp_path):
    proc = client(server, "sleep", cwd=tmp_path)
    started(proc, tmp_path)
    jobs = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline(p).startswith("sleep-job")]
    assert jobs, "the job is not running"
    proc.kill()  # SIGKILL: no forwarding; the server sees the connection close
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while any(p.exists() for p in jobs) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(p.exists() and "zombie" not in _state(p) for p in jobs)


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "comm").read_text().strip()
    except OSError:
        return ""


def _state(proc: Path) -> str:
    try:
        return (proc / "status").read_text()
    except OSError:
        return "zombie"


def test_an_idle_server_exits_and_removes_its_socket(server):
    deadline = time.monotonic() + 30
    log = Path(f"{server}.log")
    while (server.exists() or log.exists()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not server.exists() and not log.exists()  # an empty log goes with it


def test_the_client_stays_out_of_the_way(monkeypatch):
    monkeypatch.delenv(forkserver.ENABLE_ENV, raising=False)
    assert forkserver.maybe_run(["train"]) is None  # off unless asked
    monkeypatch.setenv(forkserver.ENABLE_ENV, "1")
    monkeypatch.setattr(forkserver, "_connect", lambda path: pytest.fail("must not connect"))
    assert forkserver.maybe_run(["list"]) is None  # not a job command
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    assert forkserver.maybe_run(["train"]) is None  # a cluster job runs in its own process
    monkeypatch.delenv("SLURM_JOB_ID")
    monkeypatch.setenv(forkserver.FORKED_ENV, "1")
    assert forkserver.maybe_run(["train"]) is None  # a forked job never asks a server again
    before = forkserver.fingerprint()
    monkeypatch.setenv("MARK", "another environment")
    assert forkserver.fingerprint() != before  # a server serves one environment


def test_a_cell_through_the_server_equals_a_plain_run(tmp_path):
    """Same record numbers and loss curve bit for bit; the second job finds the warm server."""
    train = {"epochs": 1, "batch_size": 16, "max_train_samples": 32, "max_eval_samples": 32, "max_length": 32}
    base = [sys.executable, "-m", "adaptbench", "train", "--method", "lora", "--model", "tiny-bert", "--task",
            "syn_sentiment", "--seed", "0", "--train-params", json.dumps(train), "--threads", "1", "--no-progress"]
    env = {**os.environ, forkserver.ENABLE_ENV: "0"}
    for name, flag in (("plain", "0"), ("warm1", "1"), ("warm2", "1")):
        proc = subprocess.run([*base, "--out", str(tmp_path / name)], cwd=REPO, capture_output=True, text=True,
                              env={**env, forkserver.ENABLE_ENV: flag, "ADAPTBENCH_FS_TEST": str(tmp_path)})
        assert proc.returncode == 0, proc.stderr[-2000:]
    records = {n: json.loads((tmp_path / n / "train.json").read_text()) for n in ("plain", "warm1", "warm2")}
    curves = {n: r["train_info"]["loss_curve"] for n, r in records.items()}
    assert curves["plain"] == curves["warm1"] == curves["warm2"]
    results = {n: json.loads((tmp_path / n / "result.json").read_text()) for n in ("plain", "warm1", "warm2")}
    assert len({json.dumps(r["metrics"], sort_keys=True) for r in results.values()}) == 1
    assert len({r["config_hash"] for r in results.values()}) == 1
