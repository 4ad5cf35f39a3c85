"""Task rows → tensors: tokenised once, padded per batch; the loss a task trains with.

The loss is the task's, not the model's ``.loss``: sequence classification (cross-entropy) and
regression (MSE) here, the causal-LM response-only loss with the LLM track. The formulas are the ones
Hugging Face's sequence-classification heads use, so scores equal those of a model asked for ``.loss``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from adaptbench import tasks


class Encoded(torch.utils.data.Dataset):
    """Tokenised once, padded per batch (dynamic padding)."""

    def __init__(self, tokenizer, split: tasks.Split, max_length: int, regression: bool):
        columns = list(zip(*split.texts))
        self.enc = tokenizer(*columns, truncation=True, max_length=max_length)
        self.labels = torch.tensor(split.labels, dtype=torch.float32 if regression else torch.long)
        self.lengths = [len(ids) for ids in self.enc["input_ids"]]  # tokens per example, after truncation

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        item = {k: v[i] for k, v in self.enc.items()}
        item["labels"] = self.labels[i]
        return item


def make_collate(tokenizer):
    def collate(items):
        labels = torch.stack([it.pop("labels") for it in items])
        batch = tokenizer.pad(items, return_tensors="pt")
        batch["labels"] = labels
        return batch

    return collate


def classification_loss(num_labels: int, regression: bool):
    """``loss(model, batch) -> scalar``: the model is called on the inputs only, the labels stay here."""

    def loss(model, batch: dict) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs).logits
        labels = batch["labels"]
        if regression:  # HF: MSELoss()(logits.squeeze(), labels.squeeze()) for one output
            return F.mse_loss(logits.squeeze(), labels.squeeze())
        return F.cross_entropy(logits.view(-1, num_labels), labels.view(-1))

    return loss


def task_loss(spec: tasks.TaskSpec):
    return classification_loss(spec.num_labels, spec.kind == "regression")
