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


def _pearson(y, p):
    return pearsonr(p, y)[0] if np.std(p) > 0 and np.std(y) > 0 else 0.0  # constant predictions: no correlation


def _spearman(y, p):
    return spearmanr(p, y)[0] if np.std(p) > 0 and np.std(y) > 0 else 0.0


METRICS = {
    "acc": lambda y, p: accuracy_score(y, p),
    "f1": lambda y, p: f1_score(y, p, pos_label=1, average="binary", zero_division=0.0),
    "mcc": _mcc,
    "pearson": _pearson,
    "spearman": _spearman,
}


def compute(metric_names, labels, predictions) -> dict[str, float]:
    """Scores in [−1, 1] or [0, 1] (tables multiply by 100, as the papers print them)."""
    unknown = [m for m in metric_names if m not in METRICS]
    if unknown:
        raise KeyError(f"unknown metric(s) {unknown}; available: {sorted(METRICS)}")
    y, p = np.asarray(labels), np.asarray(predictions)
    return {m: float(METRICS[m](y, p)) for m in metric_names}
