"""Collation and the paper-style report, on real (tiny) cells."""

import json
import math
import shutil

import pandas as pd
import pytest

from adaptbench.claims import load_claims, load_claims_file
from adaptbench.collate import collate
from adaptbench.report import build_tables, claim_verdict, write_report
from adaptbench.tracks.finetune.job import train

TRAIN = {"epochs": 1, "batch_size": 16, "max_train_samples": 32, "max_eval_samples": 32, "lr": 5e-3}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    for method in ("full", "lora"):
        for seed in (0, 1):
            cell = root / method / "tiny-bert" / "syn_sentiment" / f"seed{seed}"
            train(method=method, model="tiny-bert", task="syn_sentiment", seed=seed, out_dir=cell,
                  train_params=TRAIN, progress=False)  # scores the cell too → result.json
    return root


GRID = {"grid": "t", "methods": ["full", "lora"], "models": ["tiny-bert"], "tasks": ["syn_sentiment", "sst2"],
        "seeds": [0, 1], "train": {"selection": "last"}}


def test_collate_one_row_per_cell_and_metric(results, tmp_path):
    frame = collate([results], tmp_path / "cells.csv")
    assert len(frame) == 4 and set(frame["metric"]) == {"acc"}
    assert pd.read_csv(tmp_path / "cells.csv").shape == frame.shape


def test_table_is_mean_and_std_over_seeds_times_100(results, tmp_path):
    cells = collate([results])
    table, verdicts, _, _ = build_tables(cells, GRID, [], {"sst2": "data unavailable: SST-2/train.tsv not found"})
    lora = table[table["method"] == "lora"].iloc[0]
    scores = cells[cells["label"] == "lora"]["value"] * 100
    assert lora["syn_sentiment"] == f"{scores.mean():.1f} ± {scores.std():.1f}"
    assert lora["sst2"] == "n/a"
    assert lora["#params"] == "2.0K"  # 2048 LoRA parameters in tiny-bert, head excluded
    assert verdicts.empty


def test_report_writes_tables_plots_and_labels_synthetic(results, tmp_path):
    cells_csv = tmp_path / "cells.csv"
    collate([results], cells_csv)
    written = write_report(cells_csv, GRID, tmp_path / "report", unavailable={"sst2": "data unavailable"})
    names = {p.name for p in written}
    assert {"README.md", "table.md", "table.csv", "table.tex", "score_vs_params.png", "per_task.png"} <= names
    readme = (tmp_path / "report" / "README.md").read_text()
    assert "SYNTHETIC DATA" in readme and "**sst2**: data unavailable" in readme
    assert "Columns: each task shows its table metric (" in readme  # what a number in a column is
    assert "averages different metrics" not in readme  # both columns are accuracy
    assert r"\begin{tabular}" in (tmp_path / "report" / "table.tex").read_text()
    assert (tmp_path / "report" / "score_vs_params.png").stat().st_size > 1000
    # no claim in this grid: claims.csv is still a table a reader (or pandas) can open, with its header
    assert (tmp_path / "report" / "claims.csv").read_text().splitlines() == [
        "method,model,task,metric,ours,paper,paper_std,delta,seeds,aggregate,verdict"]


def test_claims_are_matched_and_judged(results, tmp_path):
    cells = collate([results])
    claims = [{"paper": "p", "method": "lora", "model": "tiny-bert", "task": "syn_sentiment", "metric": "acc",
               "value": 99.0, "std": 0.5, "aggregate": "median", "arxiv": "0000.00000", "table": "T"}]
    grid = {**GRID, "report": {"claims": "p", "comparable": True}}
    table, verdicts, _, _ = build_tables(cells, grid, claims, {})
    row = verdicts.iloc[0]
    ours = (cells[cells["label"] == "lora"]["value"] * 100).median()
    assert row["ours"] == pytest.approx(round(ours, 2)) and row["paper"] == 99.0
    assert row["verdict"].startswith("not reproduced") == (abs(ours - 99.0) > 1.0)
    assert "[paper 99.0]" in table[table["method"] == "lora"].iloc[0]["syn_sentiment"]
    grid["report"] = {"claims": "p", "comparable": False, "not_comparable_reason": "CPU subset"}
    assert build_tables(cells, grid, claims, {})[1].iloc[0]["verdict"] == "not comparable: CPU subset"


def test_a_claim_on_the_average_is_judged_against_our_average(results):
    cells = collate([results])
    claims = [{"paper": "p", "method": "lora", "model": "tiny-bert", "task": "avg", "metric": "GLUE avg",
               "value": 99.0, "std": None, "aggregate": "single", "arxiv": "0000.00000", "table": "abstract"}]
    grid = {**GRID, "tasks": ["syn_sentiment"], "report": {"claims": "p", "comparable": True}}
    table, verdicts, _, _ = build_tables(cells, grid, claims, {})
    ours = (cells[cells["label"] == "lora"]["value"] * 100).mean()
    assert table.set_index("method").loc["lora", "Avg"] == f"{ours:.1f} [paper 99.0]"
    row = verdicts.iloc[0]
    assert (row["task"], row["ours"], row["seeds"]) == ("avg", pytest.approx(round(ours, 2)), 2)
    assert row["verdict"].startswith("not reproduced") == (abs(ours - 99.0) > 1.0)
    # a task without scores (here unavailable) leaves no average to compare, and the claim says so
    grid["tasks"] = ["syn_sentiment", "sst2"]
    verdicts = build_tables(cells, grid, claims, {"sst2": "data unavailable"})[1]
    assert verdicts.iloc[0]["verdict"] == "not run: the paper's average needs a score on every task of the grid"


def test_verdict_tolerance():
    claim = {"value": 63.4, "std": 1.2}
    assert claim_verdict(61.1, claim, True, "") == "reproduced"  # within 2·1.2
    assert claim_verdict(60.9, claim, True, "").startswith("not reproduced")
    assert claim_verdict(None, claim, True, "") == "not run"
    assert claim_verdict(90.9, {"value": 91.5, "std": None}, True, "") == "reproduced"  # 1 point floor


def test_shipped_claims_validate():
    claims = load_claims()
    lora = [c for c in claims if c["paper"] == "lora" and c["method"] == "lora"]
    assert len(lora) == 8 and {c["task"] for c in lora} == {"mnli", "sst2", "mrpc", "cola", "qnli", "qqp", "rte", "stsb"}
    assert next(c for c in lora if c["task"] == "cola")["metric"] == "mcc"


def test_malformed_claims_name_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("paper: {title: x, arxiv: '2106.09685', year: 2022}\ntable: T\nsetting: s\nsource: s\n"
                   "aggregate: median\nclaims:\n  - {method: lora, model: m, task: t, metric: acc, value: high}\n")
    with pytest.raises(ValueError, match=r"bad.yaml: claims/0/value: 'high' is not of type 'number'"):
        load_claims_file(bad)


def test_lora_grid_prints_table_2_beside_ours(repo):
    """The shipped LoRA grid + claims/lora.yaml: every task cell of a lora row carries the paper's number."""
    import yaml

    grid = yaml.safe_load((repo / "workflows" / "grids" / "lora_roberta_base_glue.yaml").read_text())
    rows = [{"label": "lora", "method": "lora", "family": "adapter", "model": "roberta-base", "task": t, "seed": s,
             "synthetic": False, "metric": m, "last": 0.5, "best": 0.6, "trainable_params": 294_912}
            for t in grid["tasks"] for s in range(5)
            for m in {"mrpc": ["acc", "f1"], "stsb": ["pearson", "spearman"], "cola": ["mcc"]}.get(t, ["acc"])]
    table, verdicts, _, _ = build_tables(pd.DataFrame(rows), grid, load_claims(), {})
    row = table.iloc[0]
    assert row["cola"] == "60.0 ± 0.0 [paper 63.4]" and row["stsb"] == "60.0 ± 0.0 [paper 91.5]"
    assert row["#params"] == "294.9K" and row["Avg"] == "60.0"
    assert len(verdicts) == 8 and set(verdicts["verdict"].str.split(" ").str[0]) == {"not"}  # 60 is not 87.5
    assert verdicts.set_index("task").loc["rte", "paper"] == 86.6


def test_gradnormlorp_grid_compares_its_average_only(repo):
    """GradNormLoRP prints only a GLUE average (WNLI included): the Avg cell carries it, the tasks don't."""
    import yaml

    grid = yaml.safe_load((repo / "workflows" / "grids" / "gradnormlorp_roberta_base_glue.yaml").read_text())
    rows = [{"label": label, "method": method, "family": "adapter", "model": "roberta-base", "task": t,
             "seed": 1234, "synthetic": False, "metric": m, "last": 0.5, "best": best, "trainable_params": 1}
            for label, method, best in (("full-gradnormlorp", "full", 0.81), ("lora-adamw", "lora", 0.77))
            for t in grid["tasks"]
            for m in {"mrpc": ["acc", "f1"], "stsb": ["pearson", "spearman"], "cola": ["mcc"]}.get(t, ["acc"])]
    table, verdicts, _, _ = build_tables(pd.DataFrame(rows), grid, load_claims(), {})
    table = table.set_index("method")
    assert table.loc["full-gradnormlorp", "Avg"] == "81.0 [paper 80.7]"
    assert table.loc["lora-adamw", "Avg"] == "77.0 [paper 79.2]" and "paper" not in table.loc["lora-adamw", "wnli"]
    assert verdicts.set_index("method")["verdict"].to_dict() == {"full-gradnormlorp": "reproduced",
                                                                 "lora-adamw": "not reproduced (|Δ| > 1.0)"}


def test_the_legend_says_when_avg_mixes_metrics():
    from adaptbench.report import column_legend

    table = pd.DataFrame(columns=["method", "syn_sentiment", "syn_sts", "Avg"])
    legend = column_legend(table, ["syn_sentiment", "syn_sts"], {})
    assert "syn_sentiment: acc, syn_sts: pearson" in legend
    assert "it averages different metrics (acc, pearson), so read it as a summary, not a metric" in legend
