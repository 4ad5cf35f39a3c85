"""The researcher's own lm-eval task in an LLM grid, by configuration only: a task YAML and its data in a folder
named by ``eval.include_path`` (lm-eval's include_path). Its content versions the cell; a missing data file, an
unknown task or a name clash is one line; the job scores it through lm-eval on a tiny random Llama."""

import json

import pytest

from adaptbench.grid import plan
from adaptbench.tracks.llm import lmeval

QUESTIONS = [{"question": f"Is {x} a color?", "choices": ["yes", "no"], "label": int(x not in ("red", "blue"))}
             for x in ("red", "cat", "blue", "tree", "red", "dog")]


def task_folder(root, name="my_colors", rows=QUESTIONS):
    root.mkdir(parents=True, exist_ok=True)
    data = root / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / f"{name}.yaml").write_text(
        f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
        "output_type: multiple_choice\ndoc_to_text: \"Question: {{question}}\\nAnswer:\"\n"
        "doc_to_choice: \"{{choices}}\"\ndoc_to_target: label\nmetric_list:\n  - metric: acc\n"
        "process_docs: !function utils.identity\n")  # a tag lm-eval resolves; adaptbench reads past it
    (root / "utils.py").write_text("def identity(dataset):\n    return dataset\n")
    return root


def grid(folder, tasks=("syn_category", "my_colors")):
    return {"grid": "mine", "kind": "llm", "methods": ["lora"], "models": ["tiny-llama"], "tasks": ["syn_category"],
            "seeds": [0], "eval": {"tasks": list(tasks), "include_path": str(folder)}}


@pytest.fixture(autouse=True)
def no_include(monkeypatch):
    monkeypatch.setenv(lmeval.INCLUDE_ENV, "")  # recorded, so what plan() adds is undone after each test


def test_the_task_version_names_the_cell_not_the_folder(tmp_path, monkeypatch):
    folder = task_folder(tmp_path / "a")
    cell = plan(grid(folder)).cells[0]
    versions = cell.config["eval"]["user_tasks"]
    assert list(versions) == ["my_colors"] and "include_path" not in cell.config["eval"]
    assert str(tmp_path) not in json.dumps(cell.config)  # no absolute path in what names the cell
    with pytest.raises(ValueError, match=r"b/my_colors\.yaml: task 'my_colors' is also defined in .*a/my_colors"):
        plan(grid(task_folder(tmp_path / "b")))  # the folders of one run add up: one name, one task
    monkeypatch.setenv(lmeval.INCLUDE_ENV, "")
    (folder / "my_colors.jsonl").write_text(json.dumps(QUESTIONS[0]) + "\n")  # new data: a new cell
    assert plan(grid(folder)).cells[0].key != cell.key
    plain = plan({**grid(folder, ["syn_category"]), "eval": {"tasks": ["syn_category"]}}).cells[0]
    assert "user_tasks" not in plain.config["eval"]  # grids without their own tasks keep their hashes


def test_bad_tasks_fail_in_one_line_naming_the_file(tmp_path):
    folder = task_folder(tmp_path / "t")
    with pytest.raises(ValueError, match=r"unknown evaluation task 'my_colours'.*eval\.include_path"):
        plan(grid(folder, ["my_colours"]))
    with pytest.raises(ValueError, match=r"eval\.include_path: .*nowhere is not a folder"):
        plan(grid(tmp_path / "nowhere"))
    (folder / "my_colors.jsonl").unlink()
    result = plan(grid(folder))
    assert result.unavailable["eval:my_colors"].startswith("data unavailable: ")
    assert "my_colors.yaml: dataset_kwargs.data_files.test" in result.unavailable["eval:my_colors"]
    clash = task_folder(tmp_path / "c", name="gsm8k")
    with pytest.raises(ValueError, match=r"gsm8k\.yaml: task 'gsm8k' is one adaptbench generates; rename it"):
        plan(grid(clash, ["syn_category"]))


def test_the_job_scores_it_through_lm_eval_and_refuses_a_changed_task(tmp_path):
    from adaptbench.tracks.llm.job import run_cell

    folder = task_folder(tmp_path / "t")
    cell = plan(grid(folder)).cells[0]
    evaluation = {**cell.config["eval"], "limit": 6, "batch_size": 6, "bootstrap_iters": 10}
    record = run_cell(method="zero_shot", model="tiny-llama", task="syn_category", seed=0, out_dir=tmp_path / "z",
                      train_params={"max_length": 320}, evaluation=evaluation)
    assert 0 <= record["metrics"]["my_colors/acc"]["value"] <= 1 and "syn_category/acc" in record["metrics"]
    assert record["protocol"]["eval"]["user_tasks"] == cell.config["eval"]["user_tasks"]
    samples = (tmp_path / "z" / "lm_eval_samples.jsonl").read_text().splitlines()
    assert sum(json.loads(s)["task"] == "my_colors" for s in samples) == 6
    (folder / "my_colors.yaml").write_text((folder / "my_colors.yaml").read_text() + "metadata: {version: 2}\n")
    with pytest.raises(ValueError, match=r"evaluation task 'my_colors': its YAML or data is not the version"):
        run_cell(method="zero_shot", model="tiny-llama", task="syn_category", seed=0, out_dir=tmp_path / "y",
                 train_params={"max_length": 320}, evaluation=evaluation)
