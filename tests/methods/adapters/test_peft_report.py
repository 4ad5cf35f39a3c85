"""The report's "ours − PEFT" section (adaptbench/report.py ``ours_minus_peft``): paired by seed, per task."""

import pandas as pd

from adaptbench.report import ours_minus_peft, peft_section


def scores(rows):
    """Selected scores as ``selected_scores`` returns them: one row per label × model × task × seed, × 100."""
    return pd.DataFrame([{"label": label, "method": "peft" if label.startswith("peft_") else label, "model": "minilm",
                          "task": task, "seed": seed, "score": score, "trainable_params": params}
                         for label, task, seed, score, params in rows])


ROWS = [
    ("lora", "sst2", 0, 80.0, 73728), ("lora", "sst2", 1, 82.0, 73728), ("lora", "sst2", 2, 90.0, 73728),
    ("peft_lora", "sst2", 0, 79.0, 73728), ("peft_lora", "sst2", 1, 83.0, 73728),  # seed 2 not run: not paired
    ("lora", "cola", 0, 30.0, 73728), ("peft_lora", "cola", 0, 28.0, 73728),
    ("full", "sst2", 0, 85.0, 22e6),  # no PEFT row: no pair
]


def test_differences_are_paired_by_seed_per_task():
    diff = ours_minus_peft(scores(ROWS), {}, ["sst2", "cola"])
    assert len(diff) == 1
    row = diff.iloc[0]
    assert (row["ours"], row["PEFT"], row["#params ours / PEFT"]) == ("lora", "peft_lora", "73.7K / 73.7K")
    # seed 0: 80 − 79 = +1, seed 1: 82 − 83 = −1 → mean 0, std √2; seed 2 has no PEFT run
    assert row["sst2"] == "+0.0 ± 1.4 (n=2)"
    assert row["cola"] == "+2.0 (n=1)"
    assert row["Avg"] == "+1.0"


def test_explicit_pairs_override_the_naming_convention():
    rows = ROWS + [("theirs", "sst2", 0, 70.0, 73728)]
    diff = ours_minus_peft(scores(rows), {"peft_pairs": {"full": "theirs"}}, ["sst2", "cola"])
    assert diff[["ours", "PEFT"]].values.tolist() == [["full", "theirs"]]
    assert diff.iloc[0]["sst2"] == "+15.0 (n=1)" and diff.iloc[0]["cola"] == "n/a" and diff.iloc[0]["Avg"] == "n/a"


def test_no_pair_no_section(tmp_path):
    assert peft_section(scores([r for r in ROWS if r[0] != "peft_lora"]), {}, ["sst2"], tmp_path) == []
    assert not (tmp_path / "ours_vs_peft.csv").exists()
    lines = peft_section(scores(ROWS), {}, ["sst2", "cola"], tmp_path)
    assert lines[0] == "## Ours − PEFT (paired by seed)" and (tmp_path / "ours_vs_peft.csv").exists()
