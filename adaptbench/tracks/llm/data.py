"""Instruction tuning of causal LMs: the response-only encoding and the causal loss (training sets are
in ``sets.py``).

Encoding follows LLM-Adapters finetune.py (``generate_and_tokenize_prompt``, train_on_inputs=False):
the full text prompt + response + eos is tokenised once, truncated to ``max_length``, and the first
len(tokenise(prompt)) labels are set to -100, so the loss counts response tokens only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from adaptbench.tracks.llm.prompts import prompt
from adaptbench.tracks.llm.sets import Instructions  # noqa: F401  (re-exported for the job)

IGNORE = -100  # label of a token the loss does not count


def encode(tokenizer, row: dict, max_length: int) -> dict:
    """input_ids and labels of one example, labels -100 on the prompt (response-only loss)."""
    text_prompt = prompt(row["instruction"], row.get("input", ""))
    ids = tokenizer(text_prompt + row["output"], truncation=True, max_length=max_length)["input_ids"]
    if len(ids) < max_length and tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
        ids = ids + [tokenizer.eos_token_id]  # LLM-Adapters' tokenize(add_eos_token=True)
    prompt_len = len(tokenizer(text_prompt, truncation=True, max_length=max_length)["input_ids"])
    labels = [IGNORE] * min(prompt_len, len(ids)) + ids[prompt_len:]
    return {"input_ids": ids, "labels": labels}


class Encoded(torch.utils.data.Dataset):
    """Tokenised once; examples whose response was truncated away entirely are dropped (no loss)."""

    def __init__(self, tokenizer, data: Instructions, max_length: int):
        encoded = [encode(tokenizer, row, max_length) for row in data.rows]
        self.items = [e for e in encoded if any(label != IGNORE for label in e["labels"])]
        self.dropped = len(encoded) - len(self.items)
        self.truncated = sum(len(e["input_ids"]) >= max_length for e in encoded)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def make_collate(pad_id: int):
    """Right padding: pad ids, attention 0, labels -100."""

    def collate(items):
        width = max(len(it["input_ids"]) for it in items)
        ids = torch.full((len(items), width), pad_id, dtype=torch.long)
        labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, it in enumerate(items):
            n = len(it["input_ids"])
            ids[row, :n] = torch.tensor(it["input_ids"])
            labels[row, :n] = torch.tensor(it["labels"])
            mask[row, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    return collate


def causal_lm_loss(model, batch: dict) -> torch.Tensor:
    """Next-token cross-entropy over the response tokens only (labels -100 elsewhere), as HF's
    ``LlamaForCausalLM`` computes it: logits at t predict token t+1, mean over counted tokens."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shifted = logits[:, :-1].reshape(-1, logits.size(-1)).float()
    targets = batch["labels"][:, 1:].reshape(-1)
    return F.cross_entropy(shifted, targets, ignore_index=IGNORE)
