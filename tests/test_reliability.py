"""Issue 14: a matrix of bad inputs, tried as a new user would.

Every case goes through the entry point a user types (``snakemake``, ``adaptbench <job>``,
``adaptbench check``) and must end in exactly one line that names the file or the field, with no
traceback. Grid-level mistakes (the grid YAML, ``--config`` overrides) stop the run before anything is
written. Cell-level mistakes (method and training values, data files, checkpoints, diverged training,
result records, claims files) fail only their cell: in one ``--keep-going`` run beside good cells, the
good ones complete and are in the report, and every failed one is listed there with its reason.

Result records and an unrelated broken claims file are, by design, skipped with their one line rather
than failing the run (one unreadable file must never sink a report); their cases check that line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PROFILE_LINE = "Using workflow specific profile"  # Snakemake's own notice, printed before any error


def env() -> dict:
    e = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    e["PATH"] = f"{Path(sys.executable).parent}:{e['PATH']}"
    return e


def run(*args, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([*args], cwd=cwd, capture_output=True, text=True, env=env(), timeout=timeout)


def adaptbench(*args, cwd=None):
    return run(sys.executable, "-m", "adaptbench", *args, cwd=cwd)


def snakemake(work: Path, *args, timeout=900):
    return run(sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work), *args,
               cwd=work, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """The case's contract: non-zero exit, one line (Snakemake's profile notice aside), no traceback."""
    text = proc.stdout + proc.stderr
    lines = [line for line in text.strip().splitlines() if line.strip() and PROFILE_LINE not in line]
    assert proc.returncode != 0, text[-2000:]
    assert "Traceback" not in text, text[-3000:]
    assert len(lines) == 1, text[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ---- grid YAML: rejected when the DAG is built, in one line, nothing written ----------------------

GOOD = {"grid": "bad", "methods": ["full"], "models": ["tiny-bert"], "tasks": ["syn_sentiment"], "seeds": [0],
        "train": {"epochs": 1, "max_train_samples": 16}}


def without(key):
    return {k: v for k, v in GOOD.items() if k != key}


GRID_CASES = {
    "seed-not-seeds": ({**without("seeds"), "seed": [0]}, ["grid.yaml:6: unknown key 'seed'", "did you mean 'seeds'?"]),
    "missing-methods": (without("methods"), ["grid.yaml: missing required key 'methods'"]),
    "seeds-not-a-list": ({**GOOD, "seeds": 0}, ["grid.yaml:5: seeds: 0 is not valid; expected array"]),
    "negative-seed": ({**GOOD, "seeds": [-1]}, ["grid.yaml:5: seeds/0: -1 is not valid; expected >= 0"]),
    "zero-epochs": ({**GOOD, "train": {"epochs": 0}}, ["grid.yaml:6: train/epochs: 0 is not valid"]),
    "misspelt-variant-key": ({**GOOD, "methods": [{"name": "x", "method": "lora", "param": {"r": 4}}]},
                             ["unknown key 'param' in methods/0; did you mean 'params'?"]),
    "unknown-method": ({**GOOD, "methods": ["lorra"]}, ["unknown adapter method 'lorra'. Did you mean: lora"]),
    "unknown-hyperparameter": ({**GOOD, "methods": [{"name": "lora", "params": {"rank": 4}}]},
                               ["method 'lora' has no hyperparameter 'rank'"]),
    "hyperparameter-type": ({**GOOD, "methods": [{"name": "lora", "params": {"r": True}}]},
                            ["method 'lora': r must be a int", "got True"]),
    "unknown-train-setting": ({**GOOD, "train": {"learning_rate": 1e-3}}, ["grid.yaml:6: unknown key 'learning_rate' in train; remove it"]),
    "unknown-optimizer": ({**GOOD, "train": {"epochs": 1, "optimizer": "lio"}},
                          ["unknown train.optimizer 'lio'. Did you mean: lion"]),
    "unknown-task": ({**GOOD, "tasks": ["syn_sentimnt"]}, ["unknown task 'syn_sentimnt'"]),
    "model-alias-typo": ({**GOOD, "models": ["minilmm"]}, ["unknown model 'minilmm'. Did you mean: minilm?"]),
    "model-folder-missing": ({**GOOD, "models": [{"name": "mine", "source": "/no/such/model"}]},
                             ["model folder /no/such/model not found"]),
    "grid-name-dotdot": ({**GOOD, "grid": ".."}, ["grid name '..'"]),
    "model-name-dotdot": ({**GOOD, "models": [{"name": "..", "source": "tiny-bert"}]}, ["model name '..'"]),
    "duplicate-labels": ({**GOOD, "methods": ["full", {"name": "full", "method": "lora"}]},
                         ["method entry 'full' appears twice"]),
    "data-dir-missing": ({**GOOD, "data_dir": "/no/such/glue"}, ["data_dir /no/such/glue is not a folder"]),
    "exclude-misspelt": ({**GOOD, "exclude": [{"mehtod": "full"}]}, ["exclude rule", "unknown key(s) ['mehtod']"]),
    "task-train-other-task": ({**GOOD, "task_train": {"syn_sts": {"lr": 1e-3}}},
                              ["task_train names task 'syn_sts'"]),
    "report-claims-missing": ({**GOOD, "report": {"claims": "lorra"}}, ["no claims file for paper 'lorra'"]),
    "report-metric-missing": ({**GOOD, "report": {"metrics": {"syn_sentiment": "pearson"}}},
                              ["task 'syn_sentiment' has no metric 'pearson'"]),
    "unknown-kind": ({**GOOD, "kind": "finetun"}, ["kind 'finetun' is not a track. Did you mean 'finetune'?"]),
}


@pytest.mark.workflow
@pytest.mark.parametrize("case", sorted(GRID_CASES))
def test_bad_grid_is_one_line_at_dag_build(tmp_path, case):
    grid, fragments = GRID_CASES[case]
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid, sort_keys=False, default_flow_style=None))
    proc = snakemake(tmp_path, "-n", "--configfile", "grid.yaml")
    one_line_error(proc, "adaptbench: error:", *fragments)
    assert not (tmp_path / "results").exists() and not (tmp_path / "reports").exists()


# What Snakemake reads itself, before the Snakefile, and cannot be made brief there: `adaptbench check`
# (and `make check` / `make run`, which call it first) says it in one line.
FILE_CASES = {
    "missing-file": (None, ["grid.yaml: no such grid file"]),
    "bad-yaml": ("grid: x\nmethods: [full\nmodels: [tiny-bert]\n", ["grid.yaml:3:7: not valid YAML"]),
    "not-a-mapping": ("- full\n- lora\n", ["grid.yaml: a grid is a YAML mapping", "got a list"]),
    "not-utf8": (b"grid: \xff\xfe\n", ["grid.yaml: not UTF-8 text"]),
    "seed-not-seeds": (yaml.safe_dump({**without("seeds"), "seed": [0]}, sort_keys=False),
                       ["unknown key 'seed'; did you mean 'seeds'?"]),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_bad_grid_file_is_one_line_with_check(tmp_path, case):
    content, fragments = FILE_CASES[case]
    path = tmp_path / "grid.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    one_line_error(adaptbench("check", "grid.yaml", cwd=tmp_path), "adaptbench check: error:", *fragments)


def test_check_passes_a_good_grid():
    proc = adaptbench("check", "workflows/grids/demo.yaml", cwd=REPO)
    assert proc.returncode == 0 and "ok, finetune grid 'demo' with 18 cells" in proc.stdout, proc.stderr


# ---- --config overrides: named as --config, not as the file -----------------------------------------

CONFIG_CASES = {
    "negative-seed": (["seeds=[-1]"], ["--config seeds:", "-1 is not valid; expected >= 0"]),
    "misspelt-key": (["seed=[0]"], ["--config seed: unknown key 'seed'; did you mean 'seeds'?"]),
    "unknown-method": (["methods=[lorra]"], ["unknown adapter method 'lorra'"]),
    "bad-train-value": (["train={epochs: zero}"], ["--config train:", "'zero' is not valid; expected integer"]),
    "unknown-task": (["tasks=[nope]"], ["unknown task 'nope'"]),
    "grid-name-escape": (["grid=../x"], ["--config grid:", "'../x' is not valid"]),
}


@pytest.mark.workflow
@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config_override_is_one_line(tmp_path, case):
    overrides, fragments = CONFIG_CASES[case]
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(GOOD))
    proc = snakemake(tmp_path, "-n", "--configfile", "grid.yaml", "--config", *overrides)
    one_line_error(proc, "adaptbench: error:", *fragments)
    assert not (tmp_path / "results").exists()


# ---- one job: method and training values, data files --------------------------------------------

def train_job(out: Path, **over) -> list[str]:
    args = {"--method": "lora", "--model": "tiny-bert", "--task": "syn_sentiment", "--seed": "0", "--out": str(out),
            "--train-params": '{"epochs": 1, "max_train_samples": 16, "max_eval_samples": 16}'}
    args.update(over)
    return ["train", *[x for kv in args.items() for x in kv]]


PARAM_CASES = {
    "r-bool": ({"--method-params": '{"r": true}'}, ["--method-params: method 'lora': r must be a int", "got True"]),
    "r-zero": ({"--method-params": '{"r": 0}'}, ["lora: r must be a positive integer, got 0"]),
    "alpha-string": ({"--method-params": '{"alpha": "x"}'}, ["alpha must be a float", "got 'x'"]),
    "params-not-json": ({"--method-params": "{r: 4"}, ["--method-params: expected a JSON object"]),
    "weight-decay-string": ({"--train-params": '{"weight_decay": "x"}'}, ["train.weight_decay must be a number, got 'x'"]),
    "epochs-string": ({"--train-params": '{"epochs": "3"}'}, ["train.epochs must be a positive integer, got '3'"]),
    "lr-negative": ({"--train-params": '{"lr": -1}'}, ["train.lr must be > 0"]),
    "seed-negative": ({"--seed": "-1"}, ["--seed must be >= 0, got -1"]),
    "optimizer-value": ({"--train-params": '{"optimizer": "lion", "optimizer_params": {"beta1": 2}}'},
                        ["lion: beta1 must be in [0, 1), got 2"]),
}


@pytest.mark.parametrize("case", sorted(PARAM_CASES))
def test_bad_job_value_is_one_line_and_a_failure_record(tmp_path, case):
    over, fragments = PARAM_CASES[case]
    proc = adaptbench(*train_job(tmp_path / "cell", **over))
    line = one_line_error(proc, "adaptbench train: error:", *fragments)
    assert proc.returncode == 2
    failure = json.loads((tmp_path / "cell" / "failure.json").read_text())
    assert failure["status"] == "failed" and failure["track"] == "finetune" and failure["reason"] in line
    assert not (tmp_path / "cell" / "train.json").exists()


def glue_folder(root: Path) -> Path:
    """A GLUE-format folder where every task's files exist (so the grid plans them) but each is broken."""
    def write(task_dir, train, dev, binary=False):
        folder = root / task_dir
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in (("train.tsv", train), ("dev.tsv", dev)):
            (folder / name).write_bytes(text if binary else text.encode())

    write("SST-2", "", "sentence\tlabel\nfine\t1\n")                                   # empty training file
    write("CoLA", b"src\t1\t\tgood \xe9t\xe9\n", b"src\t1\t\tfine\n", binary=True)     # Latin-1, not UTF-8
    write("MRPC", "Quality\t#1 ID\t#2 ID\t#1 String\n1\ta\tb\tfine\n", "Quality\t#1 String\t#2 String\n1\ta\tb\n")
    write("RTE", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    return root


DATA_CASES = {
    "sst2": "SST-2/train.tsv: empty file; expected a header row",
    "cola": "CoLA/train.tsv: not UTF-8 text",
    "mrpc": "MRPC/train.tsv: missing column(s) ['#2 String']",
    "rte": "RTE/train.tsv:2: label 'maybe' is not one of ['entailment', 'not_entailment']",
}


@pytest.mark.parametrize("task", sorted(DATA_CASES))
def test_bad_data_file_is_one_line_naming_it(tmp_path, task):
    data = glue_folder(tmp_path / "glue")
    proc = adaptbench(*train_job(tmp_path / "cell", **{"--task": task, "--data-dir": str(data)}))
    one_line_error(proc, DATA_CASES[task])
    assert DATA_CASES[task] in json.loads((tmp_path / "cell" / "failure.json").read_text())["reason"]


# ---- the keep-going run: every cell-level failure beside good cells ------------------------------

CELL_TASKS = ["syn_sentiment", "syn_sts", "sst2", "cola", "mrpc", "rte"]
MATRIX = {
    "grid": "matrix",
    "methods": ["full", "lora",
                {"name": "big_lr", "method": "full", "task_train": {"syn_sts": {"lr": 1000}, "syn_sentiment": {"lr": 1e10}}},
                {"name": "lora_r0", "method": "lora", "params": {"r": 0}}],
    "models": ["tiny-bert"], "tasks": CELL_TASKS, "seeds": [0],
    "train": {"epochs": 1, "batch_size": 16, "max_train_samples": 32, "max_eval_samples": 32, "lr": 1e-3},
    # full on every task; the others only where their case is
    "exclude": [{"method": m, "task": t} for m, keep in (("lora", ["syn_sentiment"]), ("lora_r0", ["syn_sentiment"]),
                                                         ("big_lr", ["syn_sentiment", "syn_sts"]))
                for t in CELL_TASKS if t not in keep],
}
EXPECTED_FAILURES = {
    ("big_lr", "syn_sentiment"): "non-finite loss nan",
    ("big_lr", "syn_sts"): "pearson is undefined: the model predicts the same value",
    ("lora_r0", "syn_sentiment"): "lora: r must be a positive integer, got 0",
    **{("full", task): message for task, message in DATA_CASES.items()},
}
GOOD_CELLS = [("full", "syn_sentiment"), ("full", "syn_sts"), ("lora", "syn_sentiment")]


def cell_dirs(work: Path) -> dict:
    index = json.loads((work / "results" / "grids" / "matrix" / "index.json").read_text())
    return {(c["label"], c["task"]): work / "results" / "cells" / c["key"] for c in index["cells"]}


def tidy(work: Path) -> dict:
    import pandas as pd

    frame = pd.read_csv(work / "results" / "grids" / "matrix" / "tidy.csv")
    return {(r.label, r.task): r for r in frame.drop_duplicates(["label", "task"]).itertuples()}


@pytest.fixture(scope="module")
def matrix_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("matrix")
    grid = {**MATRIX, "data_dir": str(glue_folder(work / "glue"))}
    (work / "grid.yaml").write_text(yaml.safe_dump(grid))
    proc = snakemake(work, "--configfile", "grid.yaml", "--cores", "2", "--keep-going")
    return work, proc


@pytest.mark.workflow
def test_keep_going_reports_the_good_cells_and_every_failure_with_its_reason(matrix_run):
    work, proc = matrix_run
    assert proc.returncode != 0  # failed cells are failures
    assert f"{len(EXPECTED_FAILURES)} of {len(EXPECTED_FAILURES) + len(GOOD_CELLS)} cells failed" in proc.stderr
    rows = tidy(work)
    for cell in GOOD_CELLS:
        assert rows[cell].status == "ok", rows[cell]
        assert (cell_dirs(work)[cell] / "result.json").is_file()
    assert not (cell_dirs(work)[("lora_r0", "syn_sentiment")] / "train.json").exists()  # failed before training
    for cell, reason in EXPECTED_FAILURES.items():
        assert rows[cell].status == "failed" and reason in rows[cell].reason, (cell, rows[cell].reason)
        log = next(cell_dirs(work)[cell].glob("*.log")).read_text()
        assert "Traceback" not in log and log.strip().splitlines()[-1].startswith("adaptbench train: error:")
    report = (work / "reports" / "matrix" / "README.md").read_text()
    table = (work / "reports" / "matrix" / "table.md").read_text()
    assert "| full " in table and "| lora " in table and "big_lr" not in table
    for (label, task), reason in EXPECTED_FAILURES.items():
        assert f"{label} / tiny-bert / {task} / seed 0: **failed** — " in report and reason in report


@pytest.mark.workflow
def test_a_rerun_retries_only_the_failed_cells(matrix_run):
    work, _ = matrix_run
    proc = snakemake(work, "--configfile", "grid.yaml", "-n")
    from tests.workflow.test_snakemake import job_counts

    counts = job_counts(proc.stdout)
    assert counts["finetune"] == len(EXPECTED_FAILURES)  # the partial report does not hide them


CHECKPOINT_CASES = {
    "truncated": lambda data: data[: len(data) // 2],
    "random": lambda data: os.urandom(4096),
    "zero-byte": lambda data: b"",
}


@pytest.mark.workflow
@pytest.mark.parametrize("case", sorted(CHECKPOINT_CASES))
def test_bad_checkpoint_is_one_line_naming_it(matrix_run, tmp_path, case):
    work, _ = matrix_run
    cell = tmp_path / "cell"
    shutil.copytree(cell_dirs(work)[("lora", "syn_sentiment")], cell)
    (cell / "result.json").unlink()
    checkpoint = cell / "checkpoint.pt"
    checkpoint.write_bytes(CHECKPOINT_CASES[case](checkpoint.read_bytes()))
    proc = adaptbench("evaluate", "--train-dir", str(cell), "--out", str(cell / "result.json"))
    one_line_error(proc, f"{checkpoint}: unreadable checkpoint")
    assert "unreadable checkpoint" in json.loads((cell / "failure.json").read_text())["reason"]


RECORD_CASES = {
    "json-list": b"[1, 2, 3]\n",
    "bad-json": b'{"schema_version": 2, "metrics": \n',
    "not-utf8": b'{"schema_version": 2, "x": "\xff"}\n',
    "unknown-schema": b'{"schema_version": 9}\n',
    "metrics-a-list": b'{"schema_version": 2, "status": "ok", "metrics": [1]}\n',
}
RECORD_MESSAGES = {"json-list": "a result record is a JSON object, got a list", "bad-json": "not valid JSON",
                   "not-utf8": "not UTF-8 text", "unknown-schema": "unknown schema_version 9",
                   "metrics-a-list": "result.json"}


@pytest.mark.workflow
@pytest.mark.parametrize("case", sorted(RECORD_CASES))
def test_bad_record_is_one_line_and_a_failed_row_not_the_end_of_the_table(matrix_run, tmp_path, case):
    work, _ = matrix_run
    cells = tmp_path / "results" / "cells"
    for (label, task), folder in cell_dirs(work).items():
        if (label, task) in (("full", "syn_sentiment"), ("full", "syn_sts")):
            shutil.copytree(folder, cells / folder.name, ignore=shutil.ignore_patterns("*.pt"))
    victim = cells / cell_dirs(work)[("full", "syn_sts")].name / "result.json"
    victim.write_bytes(RECORD_CASES[case])
    index = tmp_path / "results" / "grids" / "matrix" / "index.json"
    index.parent.mkdir(parents=True)
    entries = json.loads((work / "results" / "grids" / "matrix" / "index.json").read_text())
    entries["cells"] = [c for c in entries["cells"] if c["label"] == "full" and c["task"] in ("syn_sentiment", "syn_sts")]
    index.write_text(json.dumps(entries))
    proc = adaptbench("collate", "--index", str(index), "--out", str(tmp_path / "tidy.csv"))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 0 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert str(victim) in lines[0] and RECORD_MESSAGES[case] in lines[0], lines[0]
    table = (tmp_path / "tidy.csv").read_text()
    assert "unreadable record" in table and ",ok," in table  # the failed row, and the neighbour's


# ---- claims files ------------------------------------------------------------------------------------

def claims_dir(tmp_path: Path, broken: str) -> Path:
    folder = tmp_path / "claims"
    folder.mkdir()
    shutil.copy(REPO / "claims" / "lora.yaml", folder / "lora.yaml")
    (folder / f"{broken}.yaml").write_text("paper: {arxiv: 1\nclaims: [\n")
    return folder


@pytest.mark.workflow
def test_a_broken_unrelated_claims_file_is_named_and_skipped(matrix_run, tmp_path):
    work, _ = matrix_run
    grid = {**MATRIX, "report": {"claims": "lora"}}
    proc = adaptbench("report", "--cells", str(work / "results" / "grids" / "matrix" / "tidy.csv"),
                      "--grid-json", json.dumps(grid), "--claims-dir", str(claims_dir(tmp_path, "other")),
                      "--out-dir", str(tmp_path / "report"))
    warnings = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 0, proc.stderr
    assert len(warnings) == 1 and "skipped claims file" in warnings[0] and "other.yaml:2: not valid YAML" in warnings[0]
    assert "| full " in (tmp_path / "report" / "table.md").read_text()


def test_a_grids_own_broken_claims_file_fails_at_dag_build(tmp_path):
    from adaptbench import claims

    with pytest.raises(ValueError, match=r"mine\.yaml:2: not valid YAML"):
        claims.check_papers(["mine"], claims_dir(tmp_path, "mine"))


# ---- a data folder is data, never code (item 8) ----------------------------------------------------

class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_cifar_batches_load_arrays_and_refuse_code(tmp_path, monkeypatch):
    import pickle

    import numpy as np

    from adaptbench.tta.data import read_cifar_batch

    good = tmp_path / "data_batch_1"
    good.write_bytes(pickle.dumps({b"data": np.arange(12, dtype=np.uint8).reshape(2, 6), b"labels": [1, 2]}))
    assert read_cifar_batch(good)[b"labels"] == [1, 2]
    evil = tmp_path / "test_batch"
    evil.write_bytes(pickle.dumps({b"data": _Payload(), b"labels": []}))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"test_batch: not a CIFAR-10 batch \(it references posix\.system\)"):
        read_cifar_batch(evil)
    assert not (tmp_path / "pwned").exists()


# ---- set-up: the CPU wheel index by default, the plain pin only where it cannot be reached (item 9) ---

@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_setup_takes_torch_from_the_cpu_index_and_falls_back_only_when_unreachable(tmp_path):
    import http.server
    import threading

    (tmp_path / "torch").mkdir()
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def torch_line(index):
        proc = run("make", "-n", "-C", str(REPO), "setup", f"VENV={tmp_path / 'venv'}", f"TORCH_INDEX={index}")
        assert proc.returncode == 0, proc.stderr
        return next(line for line in proc.stdout.splitlines() if "pip install -q torch" in line)

    try:
        reachable = f"http://127.0.0.1:{server.server_address[1]}"
        assert torch_line(reachable).endswith(f"pip install -q torch==2.13.0 --index-url {reachable}")
    finally:
        server.shutdown()
    assert torch_line("http://127.0.0.1:9").endswith("pip install -q torch==2.13.0")  # nothing listens on 9
    gpu = run("make", "-n", "-C", str(REPO), "setup", f"VENV={tmp_path / 'venv'}",
              "TORCH_SPEC=torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128")
    assert "pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" in gpu.stdout


def test_pyproject_license_is_an_spdx_string():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"  # no setuptools deprecation block at install
    assert "setuptools>=77" in project["build-system"]["requires"][0]
