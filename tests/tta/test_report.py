"""TTA collation and report: tables in the papers' layout and orderings checked on our numbers."""

import json

import pandas as pd
import pytest

from adaptbench.results import make_record, metric
from adaptbench.tta.report import check_ordering, collate_tta, shift_table, write_tta_report


def fake_result(path, method, scenario, seed, errors, mode="episodic", bs=64):
    metrics = {f"error/{shift}/{sev}": metric(e, False, f"{shift}/{sev}") for (shift, sev), e in errors.items()}
    metrics["error_mean"] = metric(sum(errors.values()) / len(errors), False, "all")
    result = make_record(track="tta", config={"m": method, "s": scenario, "seed": seed}, protocol={"s": scenario},
                         metrics=metrics, train_info={"seconds": 1.0, "kept_fraction": 0.5},
                         run_info={"family": "tta", "label": method, "method": method, "model": "cnn",
                                   "task": "digits-c", "seed": seed, "synthetic": True,
                                   "facets": {"scenario": scenario, "mode": mode, "batch_size": bs,
                                              "source_clean_error": 0.01, "seconds": 1.0, "kept_fraction": 0.5}})
    path.mkdir(parents=True)
    (path / "result.json").write_text(json.dumps(result))


@pytest.fixture
def cells(tmp_path):
    for seed in (0, 1):
        fake_result(tmp_path / f"tent/ep/{seed}", "tent", "ep", seed, {("noise", 5): 0.30 + 0.02 * seed, ("blur", 5): 0.5})
        fake_result(tmp_path / f"eata/ep/{seed}", "eata", "ep", seed, {("noise", 5): 0.20, ("blur", 5): 0.4})
        fake_result(tmp_path / f"tent/b1/{seed}", "tent", "b1", seed, {("noise", 5): 0.9, ("blur", 5): 0.9}, bs=1)
        fake_result(tmp_path / f"eata/b1/{seed}", "eata", "b1", seed, {("noise", 5): 0.3, ("blur", 5): 0.5}, bs=1)
    return collate_tta([tmp_path], tmp_path / "cells.csv")


def test_collate_has_one_row_per_cell_shift_severity(cells):
    assert len(cells) == 2 * 2 * 2 * 2
    assert set(cells["shift"]) == {"noise", "blur"} and set(cells["severity"]) == {5}


def test_shift_table_is_methods_by_shifts_with_mean_over_seeds(cells):
    table = shift_table(cells[cells["scenario"] == "ep"], 5, ["tent", "eata"])
    assert list(table.index) == ["tent", "eata"]
    assert table.loc["tent", "noise"] == "31.0 ± 1.4"
    assert table.loc["eata", "Mean"] == "30.0 ± 0.0"


def test_orderings_hold_or_fail_on_our_numbers(cells):
    less = {"kind": "less", "better": "eata", "worse": "tent", "scenario": "ep"}
    assert check_ordering(less, cells)[1] == "holds"
    assert check_ordering({**less, "better": "tent", "worse": "eata"}, cells)[1] == "does not hold"
    deg = {"kind": "degrades_less", "better": "eata", "worse": "tent", "scenario": "b1", "reference": "ep"}
    measured, verdict = check_ordering(deg, cells)
    assert verdict == "holds" and "Δ +10.00" in measured
    assert check_ordering({**less, "scenario": "nowhere"}, cells)[1] == "not run here"


def test_report_writes_tables_and_the_claims_section(cells, tmp_path):
    grid = {"grid": "g", "methods": ["tent", "eata"], "scenarios": [{"name": "ep"}, {"name": "b1"}],
            "report": {"title": "T", "claims": ["eata"]}}
    paths = write_tta_report(tmp_path / "cells.csv", grid, tmp_path / "rep")
    text = paths[0].read_text()
    assert "# T" in text and "SYNTHETIC" in text and "ImageNet-C" in text
    assert "EATA's error is below Tent's" in text
    assert pd.read_csv(tmp_path / "rep" / "cnn_ep.csv").shape[0] == 2
