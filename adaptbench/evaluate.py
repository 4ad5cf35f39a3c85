"""Score a classification model on a task's dev sets with the task's official metrics.

Shared by the training loop (the per-epoch dev score) and the fine-tuning track's evaluate job.
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
def predict(model, tokenizer, split: tasks.Split, spec: tasks.TaskSpec, cfg: TrainConfig, device) -> np.ndarray:
    model.eval()
    data = Encoded(tokenizer, split, cfg.max_length, spec.kind == "regression")
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.eval_batch_size, collate_fn=make_collate(tokenizer))
    out = []
    for batch in loader:
        batch.pop("labels")
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        if not torch.isfinite(logits).all():  # argmax would turn a diverged model into a score
            raise FloatingPointError(f"non-finite logits on {split.source}: the model diverged; lower train.lr")
        out.append(logits.squeeze(-1) if spec.kind == "regression" else logits.argmax(-1))
    return torch.cat(out).float().cpu().numpy()


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
