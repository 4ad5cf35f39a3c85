"""GLUE's official metrics (Wang et al., 2019), as defined in the GLUE benchmark and HF's glue metric:
CoLA Matthews correlation; STS-B Pearson and Spearman; MRPC and QQP accuracy and F1 of the positive
class; the rest accuracy. Computed with sklearn/scipy, since `evaluate` fetches its scripts from the hub.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

HIGHER_IS_BETTER = {"acc": True, "f1": True, "mcc": True, "pearson": True, "spearman": True}


def _mcc(y, p):
    return matthews_corrcoef(y, p)


def _defined_correlation(name: str, y, p) -> None:
    """A correlation with a constant side is undefined (0/0), never 0: a model that predicts one value for
    every example has collapsed or diverged, and that is a failed cell, not a score."""
    if not np.std(p) > 0:
        raise FloatingPointError(f"{name} is undefined: the model predicts the same value ({p.flat[0]:.4g}) for "
                                 f"all {p.size} examples (collapsed or diverged; lower train.lr)")
    if not np.std(y) > 0:
        raise ValueError(f"{name} is undefined: all {y.size} labels are equal; evaluate on more examples")


def _pearson(y, p):
    _defined_correlation("pearson", y, p)
    return pearsonr(p, y)[0]


def _spearman(y, p):
    _defined_correlation("spearman", y, p)
    return spearmanr(p, y)[0]


METRICS = {
    "acc": lambda y, p: accuracy_score(y, p),
    "f1": lambda y, p: f1_score(y, p, pos_label=1, average="binary", zero_division=0.0),
    "mcc": _mcc,
    "pearson": _pearson,
    "spearman": _spearman,
}


def compute(metric_names, labels, predictions) -> dict[str, float]:
    """Scores in [−1, 1] or [0, 1] (tables multiply by 100, as the papers print them).

    A diverged model is never a number: non-finite predictions, or a metric that comes out non-finite,
    raise ``FloatingPointError`` (the job then fails its cell with this reason)."""
    unknown = [m for m in metric_names if m not in METRICS]
    if unknown:
        raise KeyError(f"unknown metric(s) {unknown}; available: {sorted(METRICS)}")
    y, p = np.asarray(labels), np.asarray(predictions, dtype=float)
    bad = int((~np.isfinite(p)).sum())
    if bad:
        raise FloatingPointError(f"non-finite predictions ({bad} of {p.size} are NaN or inf): the model diverged; "
                                 "lower train.lr")
    scores = {m: float(METRICS[m](y, p)) for m in metric_names}
    bad_metrics = sorted(m for m, v in scores.items() if not np.isfinite(v))
    if bad_metrics:
        raise FloatingPointError(f"non-finite metric(s) {bad_metrics}: the predictions cannot be scored")
    return scores
