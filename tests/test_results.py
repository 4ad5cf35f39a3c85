import json
import os
from pathlib import Path

import pytest

from adaptbench import results


def test_atomic_write_leaves_old_file_and_no_temp_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    results.atomic_write_json(target, {"v": 1})

    def boom(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        results.atomic_write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_config_hash_ignores_key_order():
    assert results.config_hash({"a": 1, "b": [1, 2]}) == results.config_hash({"b": [1, 2], "a": 1})
    assert results.config_hash({"a": 1}) != results.config_hash({"a": 2})


def test_read_json_names_the_file(tmp_path):
    bad = tmp_path / "result.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"result.json: not valid JSON"):
        results.read_json(bad)


DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("name, track, metric, value", [
    ("result_v1_finetune.json", "finetune", "acc", 0.862),  # a real pre-Core II demo cell
    ("result_v1_tta.json", "tta", "error_mean", 0.1548446917014372),  # a real pre-Core II TTA cell
])
def test_schema_1_records_are_read_as_schema_2(name, track, metric, value):
    record = results.read_record(DATA / name)
    assert record["schema_version"] == results.SCHEMA_VERSION and record["upgraded_from"] == 1
    assert record["track"] == track and record["status"] == "ok"
    assert record["metrics"][metric]["value"] == pytest.approx(value)
    assert record["metrics"][metric]["higher_is_better"] is (track == "finetune")


def test_collate_reads_old_and_new_records_into_one_table():
    from adaptbench.collate import collate

    frame = collate([DATA / "result_v1_finetune.json", DATA / "result_v1_tta.json"])
    assert set(frame["track"]) == {"finetune", "tta"}
    assert frame[frame["metric"] == "acc"]["value"].item() == pytest.approx(0.862)


def test_make_record_hashes_config_and_protocol_apart():
    a = results.make_record(track="finetune", config={"method": "lora", "seed": 0}, protocol={"task": "t", "seed": 0},
                            run_info={}, metrics={"acc": results.metric(0.5, True, "validation")})
    b = results.make_record(track="finetune", config={"method": "full", "seed": 0}, protocol={"task": "t", "seed": 0},
                            run_info={}, metrics={"acc": results.metric(0.6, True, "validation")})
    assert a["config_hash"] != b["config_hash"] and a["protocol_hash"] == b["protocol_hash"]
    with pytest.raises(ValueError, match="metric 'acc'"):
        results.make_record(track="x", config={}, protocol={}, run_info={}, metrics={"acc": 0.5})


def test_a_record_that_is_a_list_is_named(tmp_path):
    bad = tmp_path / "result.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"result.json: a result record is a JSON object, got a list"):
        results.read_record(bad)


def test_a_cell_whose_init_step_failed_is_a_failed_row_with_that_reason(tmp_path):
    """A data-driven adapter's cell waits on its init job: when that fails, the cell never runs, and the
    table says why instead of listing it as not run yet."""
    from adaptbench import grid as gridlib
    from adaptbench.collate import collate

    config = {"grid": "g", "methods": ["eva", "lora"], "models": ["tiny-bert"], "tasks": ["syn_sentiment"],
              "seeds": [0], "train": {"epochs": 1}}
    plan = gridlib.plan(config)
    eva = next(c for c in plan.cells if c.method == "eva")
    init = plan.inits[eva.key]
    assert all(c.key not in plan.inits for c in plan.cells if c.method == "lora")
    index = tmp_path / "results" / "grids" / "g" / "index.json"
    gridlib.write_index(index, gridlib.index_json(plan, "g", "finetune"))
    folder = tmp_path / "results" / "inits" / init
    folder.mkdir(parents=True)
    results.atomic_write_json(folder / "failure.json", results.failure_record(
        track="finetune", config={"command": {}}, reason="eva: r must be a positive integer, got 0"))
    rows = {r.label: r for r in collate(index=index).itertuples()}
    assert rows["eva"].status == "failed"
    assert rows["eva"].reason == "its init step failed: eva: r must be a positive integer, got 0"
    assert rows["lora"].status == "missing"
