"""Open-set metrics: AUROC (knowns positive), OOD detection metrics, closed-set accuracy, openness.

Scores follow one convention throughout: higher = more likely known. Inputs may be NumPy arrays
or torch tensors; results are Python floats, fractions in [0, 1].
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

__all__ = ["auroc", "closed_set_accuracy", "ood_metrics"]


def _as_1d_numpy(values, name: str) -> np.ndarray:
    """A 1-D NumPy copy of a NumPy array, torch tensor or sequence (tensors may live on any device)."""
    if hasattr(values, "detach"):  # torch tensor, without importing torch here
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    return array


def _checked_scores(scores, name: str) -> np.ndarray:
    array = _as_1d_numpy(scores, name).astype(np.float64)
    if array.size == 0:
        raise ValueError(f"{name} is empty: AUROC needs at least one known and one unknown score")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} has {int(np.sum(~np.isfinite(array)))} non-finite value(s) (NaN or inf)")
    return array


def auroc(known_scores, unknown_scores) -> float:
    """Area under the ROC curve with knowns as positives; ties count one half.

    The probability that a random known scores above a random unknown, plus half the probability of a
    tie (the Mann-Whitney U statistic over n_k n_u): scikit-learn's ``roc_auc_score``, whose trapezoids
    over tied scores give exactly that half. Both sets must be non-empty and finite (checked here: sklearn
    would fail on one class with a message about labels).
    """
    known = _checked_scores(known_scores, "known_scores")
    unknown = _checked_scores(unknown_scores, "unknown_scores")
    is_known = np.concatenate([np.ones(known.size), np.zeros(unknown.size)])
    return float(roc_auc_score(is_known, np.concatenate([known, unknown])))


def closed_set_accuracy(predictions, labels) -> float:
    """Fraction of ``predictions`` (T,) equal to ``labels`` (T,)."""
    predicted = _as_1d_numpy(predictions, "predictions")
    truth = _as_1d_numpy(labels, "labels")
    if predicted.shape != truth.shape:
        raise ValueError(f"predictions {predicted.shape} and labels {truth.shape} differ in length")
    if truth.size == 0:
        raise ValueError("closed-set accuracy of an empty set is undefined")
    return float(np.mean(predicted == truth))


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """Signed trapezoidal area under y(x), following the points in the given order."""
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def ood_metrics(known_scores, unknown_scores, tpr_level: float = 0.95) -> dict[str, float]:
    """OOD detection metrics with knowns (in-distribution) as positives, as in ARPL's evaluation code.

    The threshold t sweeps every distinct score (plus one above them all); a sample is accepted as
    known when its score >= t. TPR(t) = fraction of knowns accepted, TNR(t) = fraction of unknowns
    rejected. Tied scores move together (scikit-learn's ``roc_curve`` grouping); ARPL's sample-by-sample
    walk gives the same numbers whenever no known and unknown score are equal.

    - ``tnr``: TNR at the threshold whose TPR is closest to ``tpr_level`` (0.95). Several thresholds
      can qualify (equal TPR, or two TPRs equally far from the level); the lowest of them is taken,
      i.e. the smallest TNR, as ARPL's first-index argmin over its sweep does.
    - ``auroc``: area under the ROC curve (ties count one half), identical to :func:`auroc`.
    - ``dtacc``: detection accuracy, max over thresholds of (TPR + TNR) / 2.
    - ``auin``: area under the precision-recall curve with knowns positive (precision = knowns among
      the accepted, recall = TPR), trapezoidal over the sweep. As in ARPL, the curve is closed at
      recall 0 with precision 0, so a perfect detector scores 1 - 1 / (2 n_known) rather than 1.
    - ``auout``: the same with unknowns positive (precision = unknowns among the rejected, recall =
      TNR), closed at recall 0 with precision 0.
    """
    from sklearn.metrics import roc_curve

    known = _checked_scores(known_scores, "known_scores")
    unknown = _checked_scores(unknown_scores, "unknown_scores")
    n_known, n_unknown = known.size, unknown.size
    is_known = np.concatenate([np.ones(n_known), np.zeros(n_unknown)])
    # points ordered by decreasing threshold: index 0 rejects everything, the last accepts everything
    fpr, tpr, _ = roc_curve(is_known, np.concatenate([known, unknown]), drop_intermediate=False)
    true_pos = np.rint(tpr * n_known)  # knowns accepted, exact counts
    false_pos = np.rint(fpr * n_unknown)  # unknowns accepted
    tnr = 1.0 - fpr

    distance = np.abs(tpr - tpr_level)
    closest = distance <= distance.min() + 1e-12
    tnr_at_level = float(tnr[closest].min())

    dtacc = float(np.max(0.5 * (tpr + tnr)))

    # where nothing is accepted (the first point) precision stays 0: the curve closes at (0, 0)
    accepted = true_pos + false_pos
    precision_in = np.divide(true_pos, accepted, out=np.zeros_like(true_pos), where=accepted > 0)
    auin = _trapezoid(precision_in, tpr)

    # the same with unknowns positive: where nothing is rejected (the last point) precision stays 0
    rejected_unknown = n_unknown - false_pos
    rejected = (n_known - true_pos) + rejected_unknown
    precision_out = np.divide(rejected_unknown, rejected, out=np.zeros_like(rejected), where=rejected > 0)
    auout = _trapezoid(precision_out[::-1], tnr[::-1])

    return {"tnr": tnr_at_level, "auroc": auroc(known, unknown), "dtacc": dtacc, "auin": auin, "auout": auout}
