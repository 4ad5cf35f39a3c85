"""GLUE metrics against values worked out by hand."""

import math

import pytest

from adaptbench.metrics import compute


def test_accuracy_and_f1_by_hand():
    y = [1, 1, 0, 0, 1]
    p = [1, 0, 0, 1, 1]
    # acc = 3/5; positive class: tp = 2, fp = 1, fn = 1 → precision = recall = 2/3 → f1 = 2/3
    out = compute(["acc", "f1"], y, p)
    assert out["acc"] == pytest.approx(0.6)
    assert out["f1"] == pytest.approx(2 / 3)


def test_mcc_by_hand():
    y = [1, 1, 0, 0, 1, 0]
    p = [1, 0, 0, 1, 1, 0]
    tp, tn, fp, fn = 2, 2, 1, 1
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert compute(["mcc"], y, p)["mcc"] == pytest.approx(expected)  # = 1/3


def test_pearson_spearman_by_hand():
    y = [1.0, 2.0, 3.0, 4.0]
    p = [1.0, 3.0, 2.0, 4.0]
    # Pearson: mean 2.5 each; cov = (2.25 + (-0.5)(0.5) + (0.5)(-0.5) + 2.25)/n, var = 1.25·n
    expected_r = (2.25 - 0.25 - 0.25 + 2.25) / 5.0
    # Spearman on ranks = Pearson here (already ranks): same value
    out = compute(["pearson", "spearman"], y, p)
    assert out["pearson"] == pytest.approx(expected_r)
    assert out["spearman"] == pytest.approx(expected_r)


@pytest.mark.parametrize("metric", ["pearson", "spearman"])
def test_constant_prediction_is_a_failure_not_a_zero_correlation(metric):
    """A collapsed regression model (lr far too high) predicts one value: the correlation is 0/0, and a
    metric never turns that into a score (issue 14, defect 4)."""
    with pytest.raises(FloatingPointError, match=f"{metric} is undefined: the model predicts the same value"):
        compute([metric], [1.0, 2.0, 3.0], [2.0, 2.0, 2.0])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("metric", ["acc", "mcc", "pearson"])
def test_non_finite_predictions_are_never_scored(metric, bad):
    with pytest.raises(FloatingPointError, match=r"non-finite predictions \(1 of 3"):
        compute([metric], [1, 0, 1], [1.0, bad, 0.0])


def test_unknown_metric_is_named():
    with pytest.raises(KeyError, match="bleu"):
        compute(["bleu"], [1], [1])


@pytest.mark.parametrize("seed", range(5))
def test_numpy_metrics_equal_sklearn_and_scipy(seed):
    """Our numpy formulas against the libraries that define them in practice, on random draws with ties,
    three classes (MNLI) for MCC and accuracy, and integer-valued STS scores (many tied ranks)."""
    np = pytest.importorskip("numpy")
    sk = pytest.importorskip("sklearn.metrics")
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    y2, p2 = rng.integers(0, 2, 200), rng.integers(0, 2, 200).astype(float)
    y3, p3 = rng.integers(0, 3, 200), rng.integers(0, 3, 200).astype(float)
    ys, ps = rng.integers(0, 6, 150).astype(float), np.round(rng.normal(2.5, 1.5, 150), 1)
    out2, out3 = compute(["acc", "f1", "mcc"], y2, p2), compute(["acc", "mcc"], y3, p3)
    assert out2["acc"] == pytest.approx(sk.accuracy_score(y2, p2), abs=1e-12)
    assert out2["f1"] == pytest.approx(sk.f1_score(y2, p2, pos_label=1, zero_division=0.0), abs=1e-12)
    assert out2["mcc"] == pytest.approx(sk.matthews_corrcoef(y2, p2), abs=1e-12)
    assert out3["mcc"] == pytest.approx(sk.matthews_corrcoef(y3, p3), abs=1e-12)
    assert out3["acc"] == pytest.approx(sk.accuracy_score(y3, p3), abs=1e-12)
    corr = compute(["pearson", "spearman"], ys, ps)
    assert corr["pearson"] == pytest.approx(stats.pearsonr(ps, ys)[0], abs=1e-12)
    assert corr["spearman"] == pytest.approx(stats.spearmanr(ps, ys)[0], abs=1e-12)


@pytest.mark.filterwarnings("ignore:A single label was found")  # sklearn's note on the one-class case
def test_degenerate_f1_and_mcc_follow_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    y, p = [0, 0, 0, 0], [0.0, 0.0, 0.0, 0.0]  # no positive at all: F1 0 (zero_division), MCC 0
    assert compute(["f1"], y, p)["f1"] == sk.f1_score(y, p, zero_division=0.0) == 0.0
    assert compute(["mcc"], y, p)["mcc"] == sk.matthews_corrcoef(y, p) == 0.0
    y, p = [1, 0, 1, 0], [1.0, 1.0, 1.0, 1.0]  # one-class predictions
    assert compute(["mcc"], y, p)["mcc"] == pytest.approx(sk.matthews_corrcoef(y, p))
