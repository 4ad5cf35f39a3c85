"""Bad input → one line naming what is wrong, exit code 2, no traceback."""

import json
import subprocess
import sys

import pytest


def adaptbench(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "adaptbench", *args], capture_output=True, text=True, cwd=cwd)


def train_args(tmp_path, **over):
    args = {"--method": "lora", "--model": "tiny-bert", "--task": "syn_sentiment", "--seed": "0",
            "--out": str(tmp_path / "cell"), "--train-params": '{"epochs": 1, "max_train_samples": 16}'}
    args.update(over)
    return [x for kv in args.items() for x in kv]


@pytest.mark.parametrize("over, message", [
    ({"--method": "lorra"}, "unknown adapter method 'lorra'. Did you mean: lora"),
    ({"--task": "sst"}, "Unknown task 'sst'. Did you mean: sst2"),
    ({"--model": "/nonexistent/model"}, "model '/nonexistent/model': folder /nonexistent/model not found"),
    ({"--method-params": '{"r": -2}'}, "lora: r must be a positive integer, got -2"),
    ({"--method-params": '{"rank": 4}'}, "method 'lora' has no hyperparameter 'rank'"),
    ({"--train-params": '{"lr": -1}'}, "train.lr must be > 0"),
    ({"--train-params": "{epochs: 1"}, "expected a JSON object"),
    ({"--task": "sst2", "--data-dir": "/nonexistent/glue"}, "task 'sst2': data unavailable: /nonexistent/glue/SST-2/train.tsv"),
    # the hub paths are real code; offline (as in CI) they must fail in one line that says what to do
    ({"--task": "sst2"}, "task 'sst2': no data_dir given and the hub dataset nyu-mll/glue/sst2 could not be loaded"),
    ({"--model": "roberta-base", "--task": "syn_sentiment"}, "model 'roberta-base' (FacebookAI/roberta-base) could not be loaded"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, over, message):
    proc = adaptbench("train", *train_args(tmp_path, **over))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert message in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "cell" / "train.json").exists()


def test_malformed_tsv_is_one_line(tmp_path):
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "train.tsv").write_text("sentence\tlabel\nfine\n")
    (tmp_path / "SST-2" / "dev.tsv").write_text("sentence\tlabel\nfine\t1\n")
    proc = adaptbench("train", *train_args(tmp_path, **{"--task": "sst2", "--data-dir": str(tmp_path)}))
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("SST-2/train.tsv:2: malformed row, 1 field(s), expected 2")


def test_evaluate_without_training_names_the_file(tmp_path):
    proc = adaptbench("evaluate", "--train-dir", str(tmp_path), "--out", str(tmp_path / "r.json"))
    assert proc.returncode == 2 and "train.json: not found" in proc.stderr


def test_list_names_each_methods_family_and_paper():
    out = adaptbench("list").stdout
    lines = dict(line.split(": ", 1) for line in out.splitlines() if not line.startswith(" ") and ": " in line)
    assert "syn_sentiment" in lines["tasks"] and "minilm" in lines["model aliases"]
    adapters = out.split("adapter methods", 1)[1].split("methods", 1)[0]
    assert "  lora " in adapters and "(arXiv:2106.09685)" in adapters and "  lion " not in adapters


def test_list_into_a_closed_pipe_is_quiet():
    proc = subprocess.run(f"{sys.executable} -m adaptbench list | head -c 10", shell=True, capture_output=True,
                          text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_a_failed_job_leaves_a_failure_record_and_a_rerun_clears_it(tmp_path):
    """Issue 14, defect 3: the reason of a failed cell is a record collate turns into a row."""
    proc = adaptbench("train", *train_args(tmp_path, **{"--method-params": '{"r": 0}', "--label": "lora_r0"}))
    assert proc.returncode == 2
    failure = json.loads((tmp_path / "cell" / "failure.json").read_text())
    assert failure["status"] == "failed" and failure["reason"] == "lora: r must be a positive integer, got 0"
    assert failure["run_info"]["label"] == "lora_r0" and failure["protocol_hash"] is None
    from adaptbench.collate import cell_rows

    row, = cell_rows(failure, tmp_path / "cell" / "failure.json")
    assert row["status"] == "failed" and row["metric"] is None
    adaptbench("train", *train_args(tmp_path, **{"--method-params": "{bad"}))  # another failure replaces it
    assert "expected a JSON object" in json.loads((tmp_path / "cell" / "failure.json").read_text())["reason"]


def test_evaluate_failure_lands_beside_its_result_file(tmp_path):
    proc = adaptbench("evaluate", "--train-dir", str(tmp_path), "--out", str(tmp_path / "result.json"))
    assert proc.returncode == 2
    assert "train.json: not found" in json.loads((tmp_path / "failure.json").read_text())["reason"]


def test_running_lists_live_processes_of_a_folder(tmp_path):
    assert adaptbench("running", str(tmp_path)).returncode == 0
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "-m", "snakemake"], cwd=tmp_path)
    try:
        proc = adaptbench("running", str(tmp_path))
        assert proc.returncode == 1 and f"pid {sleeper.pid}" in proc.stdout and "before `snakemake --unlock`" in proc.stderr
    finally:
        sleeper.kill()
