"""Open-set metrics: AUROC (knowns positive), closed-set accuracy, openness.

Scores follow one convention throughout: higher = more likely known. Inputs may be NumPy arrays
or torch tensors; results are Python floats, fractions in [0, 1].
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["auroc", "closed_set_accuracy", "openness"]


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


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``, tied values sharing the mean of the ranks they span."""
    _, group_of_value, group_sizes = np.unique(values, return_inverse=True, return_counts=True)
    # group g spans ranks first_rank[g] .. first_rank[g] + size - 1 in sorted order
    first_rank = np.cumsum(group_sizes) - group_sizes + 1
    group_mean_rank = first_rank + (group_sizes - 1) / 2.0
    return group_mean_rank[group_of_value.reshape(-1)]


def auroc(known_scores, unknown_scores) -> float:
    """Area under the ROC curve with knowns as positives; ties count one half.

    Computed as the Mann-Whitney U statistic with average ranks:
    AUROC = (sum of known ranks - n_k (n_k + 1) / 2) / (n_k n_u), i.e. the probability that a
    random known scores above a random unknown (plus half the probability of a tie).
    """
    known = _checked_scores(known_scores, "known_scores")
    unknown = _checked_scores(unknown_scores, "unknown_scores")
    ranks = _average_ranks(np.concatenate([known, unknown]))
    known_rank_sum = ranks[: known.size].sum()
    u_statistic = known_rank_sum - known.size * (known.size + 1) / 2.0
    return float(u_statistic / (known.size * unknown.size))


def closed_set_accuracy(predictions, labels) -> float:
    """Fraction of ``predictions`` (T,) equal to ``labels`` (T,)."""
    predicted = _as_1d_numpy(predictions, "predictions")
    truth = _as_1d_numpy(labels, "labels")
    if predicted.shape != truth.shape:
        raise ValueError(f"predictions {predicted.shape} and labels {truth.shape} differ in length")
    if truth.size == 0:
        raise ValueError("closed-set accuracy of an empty set is undefined")
    return float(np.mean(predicted == truth))


def openness(n_train_classes: int, n_test_classes: int) -> float:
    """Openness O = 1 - sqrt(I / S), I training (known) classes, S testing classes (known + unknown).

    0 for a closed set (S = I), approaching 1 as unknown classes dominate the test set.
    """
    if n_train_classes <= 0 or n_test_classes <= 0:
        raise ValueError(
            f"class counts must be positive, got {n_train_classes} training and {n_test_classes} testing"
        )
    if n_train_classes > n_test_classes:
        raise ValueError(
            f"{n_train_classes} training classes exceed {n_test_classes} testing classes; "
            "the testing classes include the known ones"
        )
    return 1.0 - math.sqrt(n_train_classes / n_test_classes)
