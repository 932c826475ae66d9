"""Metrics against written-out references (pairwise counts, the Mann-Whitney rank sum) and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from fastgradmix.data.openset import openness
from fastgradmix.evaluation.metrics import auroc, closed_set_accuracy


def pairwise_auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """P(known > unknown) + P(tie) / 2 over every (known, unknown) pair, in float64."""
    known, unknown = np.asarray(known, np.float64)[:, None], np.asarray(unknown, np.float64)[None, :]
    return float(np.mean((known > unknown) + 0.5 * (known == unknown)))


def rank_sum_auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """The implementation metrics.auroc had before it used scikit-learn: the Mann-Whitney U statistic
    from average ranks (scipy's rankdata), U / (n_k n_u)."""
    ranks = stats.rankdata(np.concatenate([known, unknown]).astype(np.float64), method="average")
    u_statistic = ranks[: len(known)].sum() - len(known) * (len(known) + 1) / 2.0
    return float(u_statistic / (len(known) * len(unknown)))


@pytest.mark.parametrize("seed", range(5))
def test_auroc_counts_ties_as_one_half(seed):
    rng = np.random.default_rng(seed)
    # few distinct values: many ties within and across the two sets
    known = rng.integers(0, 6, size=37).astype(np.float32) + 0.5
    unknown = rng.integers(-2, 4, size=23).astype(np.float32)
    expected = pairwise_auroc(known, unknown)
    assert rank_sum_auroc(known, unknown) == pytest.approx(expected, abs=1e-12)
    assert auroc(known, unknown) == pytest.approx(expected, abs=1e-12)


def test_auroc_on_continuous_scores():
    rng = np.random.default_rng(10)
    known, unknown = rng.normal(1.0, 1.0, 500), rng.normal(0.0, 1.5, 300)
    assert auroc(known, unknown) == pytest.approx(pairwise_auroc(known, unknown), abs=1e-12)
    assert auroc(known, unknown) == pytest.approx(rank_sum_auroc(known, unknown), abs=1e-12)


def test_auroc_accepts_tensors():
    rng = np.random.default_rng(11)
    known, unknown = rng.normal(size=40), rng.normal(size=30)
    expected = pairwise_auroc(known, unknown)
    assert auroc(torch.from_numpy(known).float(), torch.from_numpy(unknown)) == pytest.approx(expected, abs=1e-7)
    assert isinstance(auroc(torch.tensor([1.0]), torch.tensor([0.0])), float)


def test_auroc_extremes():
    assert auroc([3.0, 4.0, 5.0], [0.0, 1.0]) == 1.0
    assert auroc([0.0, 1.0], [3.0, 4.0, 5.0]) == 0.0
    assert auroc(np.full(4, 0.7), np.full(9, 0.7)) == 0.5
    assert auroc([1.0, 0.0], [0.0]) == 0.75  # one win, one tie


@pytest.mark.parametrize(
    "known, unknown, message",
    [
        ([], [1.0], "known_scores is empty"),
        ([1.0], np.array([]), "unknown_scores is empty"),
        ([1.0, np.nan], [0.0], "non-finite"),
        ([1.0], [0.0, np.inf], "non-finite"),
        (np.ones((2, 2)), [0.0], "1-D"),
    ],
)
def test_auroc_rejects_bad_input(known, unknown, message):
    with pytest.raises(ValueError, match=message):
        auroc(known, unknown)


def test_closed_set_accuracy():
    assert closed_set_accuracy(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])) == 0.75
    assert closed_set_accuracy(torch.tensor([3, 3]), torch.tensor([3, 3])) == 1.0
    assert closed_set_accuracy(torch.tensor([0, 1, 2]), np.array([1, 2, 0])) == 0.0
    with pytest.raises(ValueError, match="differ in length"):
        closed_set_accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="empty"):
        closed_set_accuracy([], [])


@pytest.mark.parametrize(
    "train_classes, test_classes, expected",
    [
        (6, 10, 0.2254033307585166),  # MNIST / SVHN / CIFAR-10: 6 known of 10
        (4, 14, 0.4654775161751512),  # CIFAR+10
        (4, 54, 0.7278344730240913),  # CIFAR+50
        (20, 200, 0.683772233983162),  # TinyImageNet
        (10, 10, 0.0),  # closed set
    ],
)
def test_openness_values(train_classes, test_classes, expected):
    assert openness(train_classes, test_classes) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("train_classes, test_classes", [(0, 10), (6, 0), (11, 10)])
def test_openness_rejects_impossible_counts(train_classes, test_classes):
    with pytest.raises(ValueError):
        openness(train_classes, test_classes)
