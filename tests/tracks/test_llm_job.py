"""LLM track: lm-eval on a tiny random Llama with local task YAMLs, the job end to end, and every
registered adapter and optimizer on a tiny Llama (the contracts' causal-LM half)."""

import json
import math

import pytest
import torch

from adaptbench import registry
from adaptbench.tracks.llm import lmeval
from adaptbench.tracks.llm.data import causal_lm_loss, encode, make_collate
from adaptbench.tracks.llm.job import run_cell
from adaptbench.tracks.llm.models import load_causal_lm

FAST_EVAL = {"tasks": ["syn_category"], "limit": 8, "batch_size": 8, "bootstrap_iters": 10}
TRAIN = {"epochs": 1, "batch_size": 4, "lr": 1e-3, "max_length": 320, "max_train_samples": 8}


def test_lm_eval_scores_a_tiny_llama_on_a_local_task(tmp_path):
    loaded = load_causal_lm("tiny-llama")
    metrics, raw = lmeval.evaluate(loaded.model, loaded.tokenizer, ["syn_category"], None, tmp_path, limit=8,
                                   batch_size=8, bootstrap_iters=10)
    assert set(metrics) == {"syn_category/acc", "syn_category/acc_norm"}
    assert 0.0 <= metrics["syn_category/acc"]["value"] <= 1.0 and metrics["syn_category/acc"]["stderr"] is not None
    assert len(raw["samples"]["syn_category"]) == 8
    yaml_text = (tmp_path / "syn_category.yaml").read_text()
    assert str(tmp_path.resolve()) in yaml_text and "output_type: multiple_choice" in yaml_text


@pytest.mark.parametrize("record, expected", [
    ({"instruction": "Please choose the correct answer to the question: Q?\n\nAnswer1: a b Answer2: c\n\n"
                     "Answer format: answer1/answer2", "answer": "answer2"}, ("Q?", ["a b", "c"], 1)),
    ({"instruction": "Please choose the correct solution to the question: How?\n\nSolution1: x\n\nSolution2: y\n\n"
                     "Answer format: solution1/solution2", "answer": "solution1"}, ("How?", ["x", "y"], 0)),
    ({"instruction": "Please choose the correct answer to fill in the blank to complete the given sentence: A _ B."
                     "\n\nOption1: Sarah Option2: Maria Answer format: option1/option2", "answer": "option2"},
     ("A _ B.", ["Sarah", "Maria"], 1)),
    ({"instruction": "Please answer the following question with true or false, question: is it?\n\n"
                     "Answer format: true/false", "answer": "false"}, ("is it?", ["true", "false"], 1)),
])
def test_llm_adapters_records_parse_into_choices(record, expected):
    doc = lmeval.parse_mc(record)
    assert (doc["question"], doc["choices"], doc["gold"]) == expected


def test_unknown_eval_task_is_named():
    assert "unknown evaluation task 'arc'" in lmeval.unavailable_reason("arc", None)
    assert "needs data_dir" in lmeval.unavailable_reason("arc_easy", None)


def test_job_trains_merges_scores_and_writes_the_record(tmp_path):
    record = run_cell(method="lora", model="tiny-llama", task="syn_category", seed=0, out_dir=tmp_path,
                      train_params=TRAIN, evaluation=FAST_EVAL)
    assert record["track"] == "llm" and record["status"] == "ok" and record["schema_version"] == 2
    assert record["train_info"]["steps"] == 2 and math.isfinite(record["train_info"]["loss_last"])
    assert record["eval_info"]["merged"] is True
    assert record["metrics"]["syn_category/acc"]["higher_is_better"] is True
    assert json.loads((tmp_path / "lm_eval_results.json").read_text())["results"]["syn_category"]
    assert len((tmp_path / "lm_eval_samples.jsonl").read_text().splitlines()) == 8
    assert record["protocol"]["eval"]["limit"] == 8 and record["protocol"]["budget"]["max_length"] == 320
    zero = run_cell(method="zero_shot", model="tiny-llama", task="syn_category", seed=0, out_dir=tmp_path / "z",
                    train_params=TRAIN, evaluation=FAST_EVAL)
    assert zero["train_info"]["steps"] == 0 and zero["run_info"]["family"] == "baseline"
    assert zero["protocol_hash"] == record["protocol_hash"]  # same protocol: same table, same leaderboard join


def tiny_batch(tokenizer):
    rows = [{"instruction": "name a color", "input": "", "output": "red"},
            {"instruction": "name an animal", "input": "", "output": "cat"}]
    return make_collate(tokenizer.pad_token_id)([encode(tokenizer, r, 256) for r in rows])


@pytest.mark.parametrize("name", registry.available("adapter"))
def test_every_adapter_trains_and_merges_on_a_tiny_llama(name):
    trains_and_merges_on_a_tiny_llama(name, {})


PEFT_ON_LLAMA = {  # PEFT tuners an LLM grid runs (llama7b_commonsense.yaml: DoRA), and its data-driven inits
    "dora": {"args": {"use_dora": True, "target_modules": ["q_proj", "v_proj"]}},
    "eva": {"args": {"r": 2, "target_modules": ["q_proj", "v_proj"], "init_lora_weights": "eva",
                     "eva_config": {"rho": 1.0}}},  # token labels: PEFT's EVA reads response tokens only
    "corda": {"args": {"r": 4, "target_modules": ["q_proj", "v_proj"], "init_lora_weights": "corda"}},
}


@pytest.mark.parametrize("tuner", PEFT_ON_LLAMA)
def test_peft_tuners_train_and_merge_on_a_tiny_llama(tuner):
    trains_and_merges_on_a_tiny_llama("peft", PEFT_ON_LLAMA[tuner])


def trains_and_merges_on_a_tiny_llama(name, params):
    loaded = load_causal_lm("tiny-llama", seed=0)
    spec = registry.get_method(name)
    method = spec.build(params)
    torch.manual_seed(0)
    model = method.apply(loaded.model)
    batch = tiny_batch(loaded.tokenizer)
    if method.DATA_DRIVEN:
        method.prepare(model, [batch])
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, f"{name} trains nothing on a Llama"
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=getattr(method, "TEST_LR", 1e-2))
    loss = causal_lm_loss(model, batch)
    extra = method.extra_loss(model)
    (loss + extra if extra is not None else loss).backward()
    opt.step()
    assert math.isfinite(loss.item())
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    if spec.mergeable:
        model.eval()
        with torch.no_grad():
            before = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            merged = method.merge(model)
            after = merged(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        assert torch.allclose(before, after, atol=1e-4), f"{name}: merge changes the outputs"


@pytest.mark.parametrize("name", registry.available("optimizer"))
def test_every_optimizer_steps_a_tiny_llama(name):
    from adaptbench.build import build_optimizer
    from adaptbench.config import TrainConfig

    loaded = load_causal_lm("tiny-llama", seed=0)
    spec = registry.get_method(name)
    opt_method = spec.build(getattr(spec.cls, "TEST_OVERRIDES", {}))
    model = opt_method.prepare_model(loaded.model)
    optimizer = build_optimizer(model, TrainConfig(lr=1e-3, optimizer=name), opt_method)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = causal_lm_loss(model, tiny_batch(loaded.tokenizer))
    loss.backward()
    optimizer.step()
    assert math.isfinite(loss.item())
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters()), f"{name} moved nothing"


def test_batch_size_auto_lets_lm_eval_measure_it_and_records_what_it_chose(tmp_path):
    """eval.batch_size: auto → lm-eval's own measurement; same scores as a fixed size, the size recorded."""
    loaded = load_causal_lm("tiny-llama")
    auto, raw = lmeval.evaluate(loaded.model, loaded.tokenizer, ["syn_category"], None, tmp_path / "a", limit=8,
                                batch_size="auto", bootstrap_iters=10)
    fixed, _ = lmeval.evaluate(loaded.model, loaded.tokenizer, ["syn_category"], None, tmp_path / "b", limit=8,
                               batch_size=8, bootstrap_iters=10)
    assert raw["batch_size"]["requested"] == "auto" and raw["batch_size"]["detected"]
    assert auto["syn_category/acc"]["value"] == pytest.approx(fixed["syn_category/acc"]["value"])
