"""Preemption-safe training: a real training process killed mid-epoch (SIGKILL, or SIGTERM as SLURM sends
before a time limit) resumes from its checkpoint, and the final metrics and tensors are bitwise those of
an uninterrupted run (CPU)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from adaptbench.loop import PREEMPTED_EXIT_CODE

TRAIN = {"epochs": 2, "batch_size": 4, "max_train_samples": 200, "max_eval_samples": 32, "lr": 1e-3,
         "max_length": 32}


def train_cmd(out, checkpoint_every=1):
    return [sys.executable, "-m", "adaptbench", "train", "--method", "lora", "--model", "tiny-bert",
            "--task", "syn_sentiment", "--seed", "3", "--train-params", json.dumps(TRAIN), "--threads", "1",
            "--no-progress", "--checkpoint-every", str(checkpoint_every), "--out", str(out)]


def run_env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    subprocess.run(train_cmd(out, checkpoint_every=0), check=True, env=run_env(), capture_output=True)
    return out


def kill_when_checkpointed(out, sig, after_steps=5):
    """Start training, wait until a resumable checkpoint exists a few steps in, then send ``sig``."""
    proc = subprocess.Popen(train_cmd(out), env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    seen = 0
    while time.time() < deadline and proc.poll() is None:
        if (out / "resume.pt").exists():
            seen += 1
            if seen >= after_steps:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed: make TRAIN longer"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def same_run(a, b):
    ra, rb = json.loads((a / "train.json").read_text()), json.loads((b / "train.json").read_text())
    assert ra["train_info"]["history"] == rb["train_info"]["history"]  # per-epoch dev metrics
    assert ra["train_info"]["loss_curve"] == rb["train_info"]["loss_curve"]
    assert ra["train_info"]["steps"] == rb["train_info"]["steps"]
    ta = torch.load(a / "checkpoint.pt", weights_only=True)["trainable"]
    tb = torch.load(b / "checkpoint.pt", weights_only=True)["trainable"]
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_sigkill_mid_epoch_then_rerun_resumes_bitwise(uninterrupted, tmp_path):
    code, _ = kill_when_checkpointed(tmp_path, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert (tmp_path / "resume.pt").exists() and not (tmp_path / "train.json").exists()
    subprocess.run(train_cmd(tmp_path), check=True, env=run_env(), capture_output=True)
    same_run(uninterrupted, tmp_path)
    assert not (tmp_path / "resume.pt").exists()  # finished: nothing left to resume


def test_sigterm_saves_exits_143_and_resumes_bitwise(uninterrupted, tmp_path):
    code, err = kill_when_checkpointed(tmp_path, signal.SIGTERM)
    assert code == PREEMPTED_EXIT_CODE, err
    assert "stopped by SIGTERM" in err and "rerun to resume" in err
    subprocess.run(train_cmd(tmp_path), check=True, env=run_env(), capture_output=True)
    same_run(uninterrupted, tmp_path)


def test_a_corrupt_resume_file_is_a_one_line_error(tmp_path):
    (tmp_path / "resume.pt").write_bytes(b"\x00garbage")
    proc = subprocess.run(train_cmd(tmp_path), env=run_env(), capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "resume.pt: unreadable resumable checkpoint" in proc.stderr
