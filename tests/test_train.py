"""The train and evaluate jobs end to end on a tiny random BERT: determinism, consistency, results."""

import json

import pytest
import torch

from adaptbench.tracks.finetune.job import evaluate_checkpoint
from adaptbench.build import linear_warmup_decay
from adaptbench.tracks.finetune.job import load_init, train

TRAIN = {"epochs": 2, "batch_size": 16, "max_train_samples": 64, "max_eval_samples": 48, "lr": 5e-3}


@pytest.fixture(scope="module")
def lora_cell(tmp_path_factory):
    out = tmp_path_factory.mktemp("cell")
    record = train(method="lora", model="tiny-bert", task="syn_sentiment", seed=0, out_dir=out,
                   train_params=TRAIN, progress=False)
    return out, record


def test_train_writes_a_complete_record(lora_cell):
    out, record = lora_cell
    info, t = record["run_info"], record["train_info"]
    for key in ("method", "method_params", "model", "task", "seed", "train", "model_info", "data", "device",
                "synthetic"):
        assert key in info, key
    assert record["config"]["method"] == "lora" and record["config"]["track"] == "finetune"
    assert info["method_params"]["r"] == 8 and info["method_params"]["alpha"] == 8.0  # paper defaults resolved
    assert info["synthetic"] is True and len(info["data"]["train"]["sha256"]) == 64
    assert t["steps"] == 2 * 4 and len(t["history"]) == 2 and t["peak_memory_bytes"] > 0
    assert t["params"]["trainable_no_head"] == 2 * 2 * 8 * (32 + 32)  # 2 layers × (query, value) × r(in+out)
    # AdamW keeps m and v (fp32) per trainable element, plus a scalar step per tensor
    n_tensors = 2 * 2 * 2 + 2  # (A, B) × (query, value) × 2 layers + classifier weight and bias
    assert t["optimizer_state_bytes"] == 2 * 4 * t["params"]["trainable"] + 4 * n_tensors
    assert (out / "checkpoint.pt").exists() and not list(out.glob(".*.tmp"))
    assert json.loads((out / "result.json").read_text())["status"] == "ok"  # scored in the same process


def test_in_process_score_equals_a_rescore_of_the_stored_checkpoint(lora_cell, tmp_path):
    """The train job scores the model it trained; `adaptbench evaluate` rebuilds it from checkpoint.pt.
    Same merged weights, same numbers, bit for bit."""
    out, _ = lora_cell
    in_process = json.loads((out / "result.json").read_text())
    rescored = evaluate_checkpoint(out, tmp_path / "result.json")
    assert {n: m["value"] for n, m in in_process["metrics"].items()} == \
        {n: m["value"] for n, m in rescored["metrics"].items()}
    assert in_process["config_hash"] == rescored["config_hash"]
    assert in_process["protocol_hash"] == rescored["protocol_hash"]
    timeless = lambda info: {k: v for k, v in info.items() if k != "seconds"}  # noqa: E731
    assert timeless(in_process["eval_info"]) == timeless(rescored["eval_info"])


@pytest.mark.parametrize("keep", ["none", "all"])
def test_keep_checkpoint_decides_the_files_never_the_record(keep, lora_cell, tmp_path):
    out, record = lora_cell
    again = train(method="lora", model="tiny-bert", task="syn_sentiment", seed=0, out_dir=tmp_path,
                  train_params={**TRAIN, "keep_checkpoint": keep}, progress=False)
    assert again["config"] == record["config"]  # run control: the same cell
    assert (tmp_path / "checkpoint.pt").exists() == (keep == "all")
    assert (tmp_path / "model.pt").exists() == (keep == "all")
    first = json.loads((out / "result.json").read_text())["metrics"]
    assert json.loads((tmp_path / "result.json").read_text())["metrics"] == first
    if keep == "none":  # nothing to re-score from: one line saying why
        with pytest.raises(FileNotFoundError, match="keep_checkpoint: none"):
            evaluate_checkpoint(tmp_path, tmp_path / "again.json")
    else:  # the merged model loads into a plain model of the same architecture
        state = torch.load(tmp_path / "model.pt", weights_only=True)
        assert not any("lora_" in k for k in state)


def test_same_seed_same_numbers(lora_cell, tmp_path):
    _, first = lora_cell
    again = train(method="lora", model="tiny-bert", task="syn_sentiment", seed=0, out_dir=tmp_path,
                  train_params=TRAIN, progress=False)
    assert again["train_info"]["history"] == first["train_info"]["history"]
    assert again["train_info"]["loss_curve"] == first["train_info"]["loss_curve"]
    assert again["config"] == first["config"]


def test_other_seed_other_numbers(lora_cell, tmp_path):
    _, first = lora_cell
    other = train(method="lora", model="tiny-bert", task="syn_sentiment", seed=1, out_dir=tmp_path,
                  train_params=TRAIN, progress=False)
    assert other["train_info"]["loss_curve"] != first["train_info"]["loss_curve"]


def test_evaluate_scores_the_merged_checkpoint_like_the_last_epoch(lora_cell, tmp_path):
    """Rebuild + load + merge + score must equal the in-training score of the last epoch."""
    out, record = lora_cell
    result = evaluate_checkpoint(out, tmp_path / "result.json")
    assert result["eval_info"]["merged"] is True
    values = {name: m["value"] for name, m in result["metrics"].items()}
    assert values == pytest.approx(record["train_info"]["history"][-1]["metrics"])
    best = record["train_info"]["best_epoch"]
    assert {name: m["best"] for name, m in result["metrics"].items()} == \
        record["train_info"]["history"][best - 1]["metrics"]
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "ok"


def test_regression_task_trains(tmp_path):
    record = train(method="full", model="tiny-bert", task="syn_sts", seed=0, out_dir=tmp_path,
                   train_params={**TRAIN, "epochs": 1}, progress=False)
    assert set(record["train_info"]["history"][0]["metrics"]) == {"pearson", "spearman"}


def test_warmup_then_linear_decay():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = linear_warmup_decay(opt, warmup_steps=2, total_steps=6)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 0.75, 0.5, 0.25])


def test_non_finite_loss_stops_with_a_clear_error(tmp_path):
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        train(method="full", model="tiny-bert", task="syn_sts", seed=0, out_dir=tmp_path,
              train_params={**TRAIN, "lr": 1e6, "max_grad_norm": 1e9}, progress=False)
    assert not (tmp_path / "train.json").exists()


def test_an_adapter_is_not_an_optimizer(tmp_path):
    with pytest.raises(ValueError, match="train.optimizer: 'lora' belongs to the adapter family, not to the optimizers"):
        train(method="full", model="tiny-bert", task="syn_sentiment", seed=0, out_dir=tmp_path,
              train_params={**TRAIN, "optimizer": "lora"}, progress=False)


@pytest.mark.parametrize("method", ["eva", "corda"])
def test_data_driven_init_cached_or_not_gives_the_same_run_and_evaluates_alike(method, tmp_path):
    from adaptbench.tracks.finetune.job import compute_init

    params = {"r": 2} if method == "eva" else {"r": 2, "num_samples": 8}
    common = dict(method=method, model="tiny-bert", task="syn_sentiment", seed=0, method_params=params,
                  train_params={"epochs": 1, "batch_size": 8, "max_train_samples": 16, "max_eval_samples": 16,
                                "lr": 1e-3}, progress=False)
    info = compute_init(method=method, model="tiny-bert", task="syn_sentiment", seed=0, out_path=tmp_path / "init.pt",
                        method_params=params, train_params=common["train_params"])
    assert info["tensors"] > 0
    uncached = train(**common, out_dir=tmp_path / "a")
    cached = train(**common, out_dir=tmp_path / "b", init_path=tmp_path / "init.pt")
    assert uncached["train_info"]["loss_curve"] == cached["train_info"]["loss_curve"]
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    for k in a["trainable"]:
        assert torch.equal(a["trainable"][k], b["trainable"][k]), k
    result = evaluate_checkpoint(tmp_path / "a", tmp_path / "a" / "result.json")
    last = uncached["train_info"]["history"][-1]["metrics"]
    assert result["metrics"]["acc"]["value"] == pytest.approx(last["acc"])
    with pytest.raises(ValueError, match=f"computed for '{method}', not 'lora'"):
        load_init(tmp_path / "init.pt", "lora")
