"""A task defined by configuration only (issue 13, item 6): a YAML and its data files in the researcher's
folder, named by a grid's ``task_dirs``; one-line errors for what can be wrong in them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from adaptbench import tasks

REPO = Path(__file__).resolve().parents[1]
ROWS = [("a wonderful , moving film", "pos"), ("dull and far too long", "neg"), ("i loved every minute", "pos"),
        ("a waste of a good cast", "neg")] * 8


def task_folder(root: Path, fmt: str = "tsv", **over) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", ROWS), ("dev", ROWS[:12])):
        path = root / f"{split}.{fmt}"
        if fmt == "jsonl":
            path.write_text("".join(json.dumps({"review": t, "sentiment": y}) + "\n" for t, y in rows))
        else:
            sep = "\t" if fmt == "tsv" else ","
            path.write_text(f"review{sep}sentiment\n" + "".join(f'"{t}, really"{sep}{y}\n' if fmt == "csv"
                                                                 else f"{t}{sep}{y}\n" for t, y in rows))
    spec = {"task": "my_reviews", "kind": "classification", "num_labels": 2, "text_fields": ["review"],
            "label_field": "sentiment", "label_names": ["neg", "pos"], "metrics": ["acc", "f1"],
            "files": {"train": f"train.{fmt}", "validation": f"dev.{fmt}"}, **over}
    (root / "my_reviews.yaml").write_text(yaml.safe_dump(spec))
    return root


@pytest.fixture
def own_tasks(monkeypatch):
    monkeypatch.delenv(tasks.TASK_DIRS_ENV, raising=False)
    return lambda folder: tasks.use_task_dirs([folder])


@pytest.mark.parametrize("fmt", ["tsv", "csv", "jsonl"])
def test_a_task_from_a_yaml_and_its_files(fmt, tmp_path, own_tasks):
    own_tasks(task_folder(tmp_path / "mine", fmt))
    assert "my_reviews" in tasks.list_tasks()
    spec = tasks.get_task("my_reviews")
    assert spec.suite == "user" and spec.main_metric == "acc" and spec.eval_splits == ("validation",)
    train = tasks.load_split(spec, "train", data_dir="/somewhere/else")  # its own folder, whatever the grid's
    assert len(train) == 32 and train.labels[:2] == [1, 0]
    assert train.texts[0][0].startswith("a wonderful , moving film")  # CSV: the quoted comma stays in the text
    assert not train.source.startswith("/")  # no absolute path of this machine in a record


def test_the_version_names_the_content(tmp_path, own_tasks):
    """Cells are keyed by task name and version: another folder's task of the same name is another task."""
    own_tasks(task_folder(tmp_path / "a"))
    first = tasks.get_task("my_reviews").version
    (tmp_path / "a" / "dev.tsv").write_text((tmp_path / "a" / "dev.tsv").read_text() + "one more\tpos\n")
    assert tasks.get_task("my_reviews").version != first


@pytest.mark.parametrize("over, split, message", [
    ({"label_names": ["bad", "good"]}, "train", "label 'pos' is not one of ['bad', 'good']"),
    ({"label_field": "stars"}, "train", "missing column(s) ['stars']"),
    ({"files": {"train": "train.tsv", "validation": "gone.tsv"}}, None, "files.validation:"),
    ({"metrics": ["accuracy"]}, None, "unknown metric(s) ['accuracy']"),
    ({"labelfield": "x"}, None, "unknown field(s) 'labelfield' (did you mean 'label_field'?)"),
    ({"kind": "ranking"}, None, "kind must be classification or regression"),
])
def test_what_is_wrong_in_a_task_is_one_line_naming_the_file(over, split, message, tmp_path, own_tasks):
    folder = task_folder(tmp_path / "mine", **over)
    own_tasks(folder)
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        spec = tasks.get_task("my_reviews")
        tasks.load_split(spec, split)
    assert message in str(e.value) and str(folder) in str(e.value) and "\n" not in str(e.value)


def test_a_name_the_package_has_is_refused(tmp_path, own_tasks):
    folder = task_folder(tmp_path / "mine")
    (folder / "my_reviews.yaml").rename(folder / "sst2.yaml")
    own_tasks(folder)
    with pytest.raises(ValueError, match="task 'sst2' already exists"):
        tasks.list_tasks()


@pytest.mark.workflow
def test_a_task_defined_only_by_yaml_and_tsv_runs_in_a_grid_and_shows_in_the_table(tmp_path):
    task_folder(tmp_path / "my_tasks")
    grid = {"grid": "own_task", "methods": ["lora"], "models": ["tiny-bert"], "tasks": ["my_reviews"], "seeds": [0],
            "task_dirs": ["my_tasks"], "train": {"epochs": 1, "batch_size": 16, "lr": 5e-3, "keep_checkpoint": "none"}}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    env = {k: v for k, v in os.environ.items() if k != tasks.TASK_DIRS_ENV}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
                           "--configfile", "grid.yaml", "--cores", "1"], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    table = (tmp_path / "reports" / "own_task" / "table.md").read_text()
    assert "my_reviews" in table and "| lora " in table
    cell = next((tmp_path / "results" / "cells").iterdir())  # keep_checkpoint: none (typed as null by the grid)
    assert (cell / "result.json").is_file() and not list(cell.glob("*.pt"))
