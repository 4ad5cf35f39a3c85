"""LLM track data: the LLM-Adapters prompt, the response-only mask, the causal loss, answer extraction."""

import pytest
import torch

from adaptbench.tracks.llm import prompts, sets, synthetic
from adaptbench.tracks.llm.data import IGNORE, Encoded, causal_lm_loss, encode, make_collate
from adaptbench.tracks.llm.models import load_causal_lm


@pytest.fixture(scope="module")
def tiny():
    return load_causal_lm("tiny-llama")


def test_prompt_is_llm_adapters_template_with_and_without_input():
    assert prompts.prompt("Add 2 and 3.") == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
        "\n\n### Instruction:\nAdd 2 and 3.\n\n### Response:\n")
    assert prompts.prompt("Translate.", "Bonjour") == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n### Instruction:\nTranslate.\n\n"
        "### Input:\nBonjour\n\n### Response:\n")


def test_response_only_mask_is_exact(tiny):
    tok = tiny.tokenizer
    row = {"instruction": "Say hi", "input": "", "output": "hi there"}
    enc = encode(tok, row, max_length=1024)
    n_prompt = len(tok(prompts.prompt("Say hi"))["input_ids"])
    response = tok(prompts.prompt("Say hi") + "hi there")["input_ids"][n_prompt:]
    assert enc["labels"] == [IGNORE] * n_prompt + response + [tok.eos_token_id]
    assert enc["input_ids"][n_prompt:] == response + [tok.eos_token_id]
    assert tok.decode(response) == "hi there"


def test_truncation_keeps_the_mask_and_drops_examples_without_a_response(tiny):
    tok = tiny.tokenizer
    row = {"instruction": "x" * 50, "input": "", "output": "yes"}
    n_prompt = len(tok(prompts.prompt("x" * 50))["input_ids"])
    enc = encode(tok, row, max_length=n_prompt + 2)  # room for two response tokens, no eos
    assert len(enc["input_ids"]) == n_prompt + 2 and enc["labels"][n_prompt:] == enc["input_ids"][n_prompt:]
    data = sets.Instructions([row, {"instruction": "y" * 500, "input": "", "output": "no"}], "t", "h")
    encoded = Encoded(tok, data, max_length=n_prompt + 2)
    assert len(encoded) == 1 and encoded.dropped == 1


def test_causal_loss_counts_response_tokens_only_and_equals_hf(tiny):
    tok, model = tiny.tokenizer, tiny.model
    rows = [{"instruction": "a", "input": "", "output": "bcd"}, {"instruction": "long prompt", "input": "", "output": "e"}]
    batch = make_collate(tok.pad_token_id)([encode(tok, r, 256) for r in rows])
    ours = causal_lm_loss(model, batch)
    hf = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    assert torch.allclose(ours, hf, atol=1e-6)
    changed = batch["input_ids"].clone()
    changed[0, 3] = (changed[0, 3] + 1) % 256  # a prompt token: changes context, but no target counted there
    assert batch["labels"][0, 3] == IGNORE


@pytest.mark.parametrize("dataset, text, expected", [
    ("boolq", "the correct answer is true", "true"),
    ("boolq", "False, because ... true", "false"),  # the first answer word wins
    ("piqa", "I think solution2 is right", "solution2"),
    ("ARC-Easy", "the correct answer is answer3.", "answer3"),
    ("winogrande", "option1", "option1"),
    ("social_i_qa", "no idea", ""),
])
def test_commonsense_extraction(dataset, text, expected):
    assert prompts.extract_choice(dataset, text) == expected


@pytest.mark.parametrize("text, expected", [
    ("The answer is 18.", 18.0), ("she pays $1,250 in total", 1250.0), ("-3.5 then 7", 7.0),
    ("no number", None), ("#### 42", 42.0),
])
def test_math_extraction_takes_the_last_number(text, expected):
    assert prompts.extract_number(text) == expected


def test_math_correct_within_1e_3():
    assert prompts.number_correct(18.0004, 18.0) and not prompts.number_correct(18.01, 18.0)
    assert not prompts.number_correct(None, 1.0)
    assert prompts.gsm8k_label("She makes 9 * 2 = $18.\n#### 18") == 18.0


def test_synthetic_task_splits_words_and_is_labelled():
    train, test = synthetic.split_words("train"), synthetic.split_words("test")
    assert not {w for w, _ in train} & {w for w, _ in test}
    docs = synthetic.mc_docs("test")
    assert all(d["choices"] == list(synthetic.CHOICES) and 0 <= d["gold"] < 4 for d in docs)
    assert sets.load_instructions("syn_category", None).synthetic


def test_hub_only_training_sets_are_unavailable_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "not available offline" in sets.unavailable_reason("metamathqa", None)
    with pytest.raises(FileNotFoundError, match="training set 'commonsense_170k'"):
        sets.load_instructions("commonsense_170k", None)
