"""The leaderboard on a small fake store of valid records: one table per seedless protocol (never mixed),
schema-1 records apart, statistics, claims beside ours, filters, the commands, and report-all."""

import json
import math

import pytest
from scipy import stats

from adaptbench import leaderboard as lb
from adaptbench.leaderboard_commands import COMMANDS
from adaptbench.results import atomic_write_json, make_record, metric

BUDGET = {"epochs": 3, "batch_size": 16, "max_length": 64, "max_train_samples": 256, "selection": "best"}


def cell(root, *, label, task, seed, acc, method=None, params=1000, budget=BUDGET, model="minilm",
         weights="sha256:abc", lr=2e-3, status="ok"):
    """Write one finetune record under root/cells/<hash>/result.json, as the evaluate job shapes it."""
    method = method or label
    protocol = {"track": "finetune", "model": {"source": model, "weights": weights}, "task": task, "task_version": 1,
                "data": {"train": f"{task}-train", "validation": f"{task}-val"}, "budget": budget, "seed": seed}
    config = {"method": method, "label": label, "task": task, "seed": seed, "lr": lr, "budget": budget, "model": weights}
    info = {"method": method, "method_params": {"r": 8}, "model": model, "task": task, "seed": seed, "label": label,
            "family": "adapter", "train": {"lr": lr, **budget}, "synthetic": False}
    if status == "ok":
        record = make_record(track="finetune", config=config, protocol=protocol, run_info=info,
                             train_info={"params": {"trainable_no_head": params}, "optimizer_state_bytes": 8 * params,
                                         "seconds_per_step": 0.01},
                             metrics={"acc": metric(acc - 0.05, True, "validation", best=acc)},
                             eval_info={"main_metric": "acc", "selection": budget["selection"]})
    else:
        record = {**make_record(track="finetune", config=config, protocol={}, run_info=info, status="failed",
                                reason="diverged"), "protocol": None, "protocol_hash": None}
    atomic_write_json(root / "cells" / record["config_hash"] / "result.json", record)
    return record


def index(root, grid, records, kind="finetune"):
    cells = [{"key": r["config_hash"], "track": "finetune", "label": r["run_info"]["label"], "method": r["run_info"]["method"],
              "model": r["run_info"]["model"], "task": r["run_info"]["task"], "seed": r["run_info"]["seed"]} for r in records]
    atomic_write_json(root / "grids" / grid / "index.json", {"grid": grid, "kind": kind, "unavailable": {}, "cells": cells})


SCORES = {"lora": {"sst2": [0.80, 0.82, 0.84], "mrpc": [0.70, 0.71, 0.72]},
          "full": {"sst2": [0.85, 0.86, 0.90], "mrpc": [0.74, 0.70, 0.72]}}


@pytest.fixture
def store(tmp_path):
    records = [cell(tmp_path, label=label, task=task, seed=seed, acc=acc, params=1000 if label == "lora" else 10**6)
               for label, by_task in SCORES.items() for task, accs in by_task.items() for seed, acc in enumerate(accs)]
    index(tmp_path, "toy", records)
    return tmp_path, records


def test_one_table_per_protocol_with_seed_statistics_and_avg(store):
    root, _ = store
    cell(root, label="lora", task="sst2", seed=0, acc=0.5, budget={**BUDGET, "epochs": 1})  # another protocol
    boards = lb.load_boards(root)[1]
    assert len(boards) == 2  # the 1-epoch cell is never averaged into the 3-epoch table
    main = next(b for b in boards if any("epochs=3" in line for line in b.protocol))
    other = next(b for b in boards if b is not main)
    assert [r["row"] for r in other.rows] == ["lora"] and other.rows[0]["stats"][other.columns[0].key]["n"] == 1
    assert [c.task for c in main.columns] == ["mrpc", "sst2"]
    assert [r["row"] for r in main.rows] == ["full", "lora"]  # best Avg first
    lora = next(r for r in main.rows if r["row"] == "lora")
    sst2 = next(c for c in main.columns if c.task == "sst2")
    s = lora["stats"][sst2.key]
    values = [100 * a for a in SCORES["lora"]["sst2"]]  # the best epoch (selection: best), × 100
    half = stats.t.ppf(0.975, 2) * stats.tstd(values) / math.sqrt(3)
    assert s["n"] == 3 and s["mean"] == pytest.approx(82.0) and s["hi"] - s["mean"] == pytest.approx(half)
    per_seed = [(a + b) * 50 for a, b in zip(SCORES["lora"]["sst2"], SCORES["lora"]["mrpc"])]
    assert lora["stats"]["Avg"]["mean"] == pytest.approx(sum(per_seed) / 3)
    assert "seeds: 0, 1, 2 (3)" in main.protocol and any(line.startswith("budget: ") and "epochs=3" in line for line in main.protocol)
    assert lora["trainable_params"] == 1000 and lora["optimizer_state_bytes"] == 8000


def test_the_seed_inside_a_random_init_does_not_split_a_table(tmp_path):
    for seed in (0, 1):  # tiny-bert's protocol names its weights "random init, seed <n>"
        cell(tmp_path, label="lora", task="sst2", seed=seed, acc=0.6 + seed / 10, weights=f"random init, seed {seed}")
    (board,) = lb.load_boards(tmp_path)[1]
    assert board.rows[0]["stats"][board.columns[0].key]["n"] == 2
    assert "random init, seed *" in board.heading


def test_schema1_records_stand_apart_and_failed_cells_are_counted(store):
    root, _ = store
    v1 = {"schema_version": 1, "status": "ok", "metrics": {"last": {"acc": 0.7}, "best": {"acc": 0.75}},
          "run_info": {"method": "lora", "model": "minilm", "task": "sst2", "seed": 0, "config_hash": "0123456789abcdef"}}
    atomic_write_json(root / "cells" / "0123456789abcdef" / "result.json", v1)
    cell(root, label="lora", task="sst2", seed=5, acc=0.1, status="failed")
    store_, boards = lb.load_boards(root)
    old = [b for b in boards if b.heading.startswith(lb.SCHEMA1)]
    assert len(old) == 1 and boards[-1] is old[0]  # schema 2 first, schema 1 apart
    assert old[0].rows[0]["stats"][old[0].columns[0].key]["n"] == 1
    assert all(r["stats"][c.key]["n"] == 3 for b in boards if b is not old[0] for r in b.rows for c in b.columns)
    assert store_.failed == 1 and "1 failed" in lb.summary_line(store_, boards)


def test_one_label_with_two_configurations_is_two_rows(store):
    root, _ = store
    cell(root, label="lora", task="sst2", seed=0, acc=0.3, lr=1e-4)  # another grid's "lora", same protocol
    (board,) = lb.load_boards(root)[1]
    names = [r["row"] for r in board.rows]
    assert "full" in names and len([n for n in names if n.startswith("lora [")]) == 2


def test_grid_labels_filters_and_one_line_errors(store):
    root, records = store
    index(root, "renamed", [{**r, "run_info": {**r["run_info"], "label": "LoRA-r8"}} for r in records[:6]])
    (board,) = lb.load_boards(root, grid="renamed")[1]
    assert [r["row"] for r in board.rows] == ["LoRA-r8"]
    (board,) = lb.load_boards(root, task="mrpc")[1]
    assert [c.task for c in board.columns] == ["mrpc"]
    with pytest.raises(FileNotFoundError, match="no stored grid 'tyo'. Did you mean: toy"):
        lb.read_store(root, "tyo")
    with pytest.raises(ValueError, match="--task: no stored result has task 'sst'. Did you mean: sst2"):
        lb.load_boards(root, task="sst")


def test_claims_sit_beside_ours_with_a_verdict(store, tmp_path_factory):
    root, _ = store
    claims = tmp_path_factory.mktemp("claims")
    (claims / "toy.yaml").write_text(json.dumps({
        "paper": {"title": "Toy", "arxiv": "0000.00000", "year": 2024}, "table": "Table 1", "setting": "toy",
        "source": "test", "aggregate": "mean", "scale": 100,
        "claims": [{"method": "lora", "model": "minilm", "task": "sst2", "metric": "acc", "value": 95.1, "std": 0.2}]}))
    text, _, boards = lb.leaderboard(root, claims_dir=claims)
    assert "[paper 95.1]" in text
    (claim,) = boards[0].claims
    assert claim["ours"] == pytest.approx(82.0) and claim["verdict"].startswith("not comparable")


def test_pareto_front():
    points = [("a", 10, 80.0), ("b", 100, 85.0), ("c", 100, 79.0), ("d", 5, 70.0)]
    assert lb.pareto_front(points) == {"a", "b", "d"}
    assert lb.pareto_front(points, higher_is_better=False) == {"d"}


def run(argv, capsys):
    import argparse

    parser = argparse.ArgumentParser(prog="adaptbench")
    sub = parser.add_subparsers(dest="stage", required=True)
    for command in COMMANDS:
        command.add_arguments(sub.add_parser(command.name))
    args = parser.parse_args(argv)
    code = next(c for c in COMMANDS if c.name == args.stage).run(args)
    return code, capsys.readouterr().out


def test_leaderboard_command_in_every_format(store, capsys):
    root, _ = store
    _, out = run(["leaderboard", "--results", str(root)], capsys)
    assert "12 records from" in out and "| full" in out and "82.0 ± 2.0 [77.0, 87.0]" in out
    _, out = run(["leaderboard", "--results", str(root), "--format", "csv", "--task", "sst2"], capsys)
    assert out.splitlines()[0].startswith("protocol,table,method,task,metric,n,mean,std,ci95_low,ci95_high")
    _, out = run(["leaderboard", "--results", str(root), "--format", "html", "--out", str(root / "lb.html")], capsys)
    page = (root / "lb.html").read_text()
    assert page.count('<tr data-row="') == 2 and "data:image/png;base64," in page


def test_an_empty_store_says_so(tmp_path, capsys):
    _, out = run(["leaderboard", "--results", str(tmp_path)], capsys)
    assert "0 records" in out and "No stored results" in out


def test_report_all_regenerates_every_grid_from_the_store(store, capsys):
    root, _ = store
    (root / "grids" / "empty").mkdir()
    atomic_write_json(root / "grids" / "empty" / "index.json",
                      {"grid": "empty", "kind": "finetune", "unavailable": {}, "cells": [
                          {"key": "f" * 16, "track": "finetune", "label": "lora", "method": "lora", "model": "minilm",
                           "task": "sst2", "seed": 0}]})
    reports = root / "reports"
    _, out = run(["report-all", "--results", str(root), "--reports", str(reports)], capsys)
    assert "toy: ok" in out and "empty: skipped" in out and "no results to report" in out
    assert "nothing trained" in out
    table = (reports / "toy" / "table.md").read_text()
    assert "full" in table and "lora" in table
    assert (reports / "leaderboard.html").is_file() and "| lora" in (reports / "leaderboard.md").read_text()


def test_tta_errors_sort_lowest_first_and_llm_cells_give_one_column_per_eval_task(tmp_path):
    for method, err in (("tent", 0.2), ("source", 0.4)):
        for seed in (0, 1):
            protocol = {"track": "tta", "source": {"name": "cnn_bn"}, "suite": "digits_c", "data": {"x": "h"},
                        "scenario": {"mode": "episodic"}, "seed": seed}
            record = make_record(track="tta", config={"m": method, "s": seed}, protocol=protocol,
                                 run_info={"method": method, "label": method, "model": "cnn_bn", "task": "digits_c",
                                           "seed": seed, "family": "tta"},
                                 metrics={"error_mean": metric(err + seed / 100, False, "all"),
                                          "error/noise/5": metric(0.9, False, "noise")})
            atomic_write_json(tmp_path / "cells" / record["config_hash"] / "result.json", record)
    llm = make_record(track="llm", config={"llm": 1}, protocol={"track": "llm", "model": {"source": "tiny"},
                                                                 "train_set": {"name": "syn"}, "seed": 0},
                      run_info={"method": "lora", "label": "lora", "model": "tiny", "task": "syn", "seed": 0},
                      metrics={"arc_easy/acc": metric(0.5, True, "arc_easy"), "arc_easy/acc_norm": metric(0.6, True, "x"),
                               "gsm8k/exact_match/flexible-extract": metric(0.1, True, "gsm8k")})
    atomic_write_json(tmp_path / "cells" / llm["config_hash"] / "result.json", llm)
    boards = {b.track: b for b in lb.load_boards(tmp_path)[1]}
    tta = boards["tta"]
    assert [r["row"] for r in tta.rows] == ["tent", "source"] and tta.columns[0].metric == "error_mean"
    assert tta.rows[0]["stats"][tta.columns[0].key]["mean"] == pytest.approx(20.5)  # % error, mean of 2 seeds
    assert [c.task for c in boards["llm"].columns] == ["arc_easy", "gsm8k"]
