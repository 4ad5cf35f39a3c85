"""Score a classification model on a task's dev sets with the task's official metrics.

Shared by the training loop (the per-epoch dev score) and the fine-tuning job's final score (and
``adaptbench evaluate``, which re-scores a stored cell).
"""

from __future__ import annotations

import numpy as np
import torch

from adaptbench import metrics as glue_metrics
from adaptbench import tasks
from adaptbench.config import TrainConfig
from adaptbench.data import Encoded, make_collate


def split_suffix(split: str) -> str:
    """Metric-name suffix of an extra dev set: validation → '', validation_mm → '_mm'."""
    return "" if split == "validation" else split.removeprefix("validation")


@torch.no_grad()
def predict_logits(model, tokenizer, split: tasks.Split, spec: tasks.TaskSpec, cfg: TrainConfig, device,
                   sort_by_length: bool = True) -> torch.Tensor:
    """The model's outputs on ``split``, one row per example in the split's order (CPU, float).

    ``sort_by_length``: batches are cut from the examples sorted by length (longest first), so each pads to
    little more than its own length, and the outputs are put back in the split's order. The outputs are
    those of unsorted batches up to float rounding (padding is masked; batch shapes change the sums)."""
    model.eval()
    data = Encoded(tokenizer, split, cfg.max_length, spec.kind == "regression")
    order = np.argsort(-np.asarray(data.lengths, dtype=np.int64), kind="stable") if sort_by_length else None
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.eval_batch_size, collate_fn=make_collate(tokenizer),
                                         sampler=order.tolist() if order is not None else None)
    out = []
    for batch in loader:
        batch.pop("labels")
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        if not torch.isfinite(logits).all():  # argmax would turn a diverged model into a score
            raise FloatingPointError(f"non-finite logits on {split.source}: the model diverged; lower train.lr")
        out.append(logits.float().cpu())
    if not out:
        return torch.empty(0, spec.num_labels)
    logits = torch.cat(out)
    if order is None:
        return logits
    restored = torch.empty_like(logits)
    restored[torch.as_tensor(order)] = logits  # row i of the sorted pass is example order[i]
    return restored


def predict(model, tokenizer, split: tasks.Split, spec: tasks.TaskSpec, cfg: TrainConfig, device,
            sort_by_length: bool = True) -> np.ndarray:
    """Predictions in the split's order: the regression output, or the class with the largest logit."""
    logits = predict_logits(model, tokenizer, split, spec, cfg, device, sort_by_length)
    preds = logits.squeeze(-1) if spec.kind == "regression" else logits.argmax(-1)
    return preds.float().numpy()


def evaluate_splits(model, tokenizer, spec: tasks.TaskSpec, splits: dict, cfg: TrainConfig, device) -> dict:
    scores = {}
    for name, split in splits.items():
        preds = predict(model, tokenizer, split, spec, cfg, device)
        for metric, value in glue_metrics.compute(spec.metrics, split.labels, preds).items():
            scores[metric + split_suffix(name)] = value
    return scores


def metric_split(spec: tasks.TaskSpec, metric: str) -> str:
    """The dev set a metric name was computed on (``acc_mm`` → ``validation_mm``)."""
    for split in spec.eval_splits:
        suffix = split_suffix(split)
        if suffix and metric.endswith(suffix):
            return split
    return "validation"
