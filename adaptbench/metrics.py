"""GLUE's official metrics (Wang et al., 2019), as defined in the GLUE benchmark and HF's glue metric:
CoLA Matthews correlation; STS-B Pearson and Spearman; MRPC and QQP accuracy and F1 of the positive
class; the rest accuracy.

Written out in numpy from their definitions (``evaluate`` fetches its scripts from the hub, and importing
scipy.stats and sklearn costs every job 2.5 s at start-up). tests/test_metrics.py checks each against
sklearn and scipy, which stay test-only oracles.
"""

from __future__ import annotations

import numpy as np

HIGHER_IS_BETTER = {"acc": True, "f1": True, "mcc": True, "pearson": True, "spearman": True}


def _accuracy(y, p) -> float:
    return float(np.mean(y == p))


def _f1(y, p) -> float:
    """F1 of the positive class (label 1); 0 when there is no positive prediction nor label."""
    tp = np.sum((p == 1) & (y == 1))
    wrong = np.sum((p == 1) != (y == 1))  # false positives + false negatives
    return float(2 * tp / (2 * tp + wrong)) if 2 * tp + wrong > 0 else 0.0


def _mcc(y, p) -> float:
    """Matthews correlation, multiclass form (Gorodkin 2004) from the confusion matrix C:
    (c·s − t·p̂) / √((s² − p̂·p̂)(s² − t·t)), with c correct, s samples, t true and p̂ predicted counts
    per class; 0 where a side is constant (sklearn's convention)."""
    classes, inverse = np.unique(np.concatenate([y, p]), return_inverse=True)
    yi, pi = inverse[: len(y)], inverse[len(y):]
    k = len(classes)
    t, q = np.bincount(yi, minlength=k).astype(float), np.bincount(pi, minlength=k).astype(float)
    c, s = float(np.sum(yi == pi)), float(len(y))
    cov_yp, cov_pp, cov_yy = c * s - t @ q, s * s - q @ q, s * s - t @ t
    return 0.0 if cov_pp * cov_yy == 0 else float(cov_yp / np.sqrt(cov_yy * cov_pp))


def _correlation(a, b) -> float:
    a, b = a - a.mean(), b - b.mean()
    r = float(a @ b / np.sqrt((a @ a) * (b @ b)))
    return max(-1.0, min(1.0, r))


def _average_ranks(x) -> np.ndarray:
    """Ranks 1..n, tied values sharing the mean of the ranks they span (Spearman's convention)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])  # first position of each run of equal values
    ends = np.r_[starts[1:], len(xs)]
    run_rank = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


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
    return _correlation(np.asarray(p, float), np.asarray(y, float))


def _spearman(y, p):
    _defined_correlation("spearman", y, p)
    return _correlation(_average_ranks(np.asarray(p, float)), _average_ranks(np.asarray(y, float)))


METRICS = {
    "acc": _accuracy,
    "f1": _f1,
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
