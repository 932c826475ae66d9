"""OOD metrics against a threshold sweep written out here, ARPL's sample-by-sample walk, and hand-made sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastgradmix.evaluation.metrics import auroc, ood_metrics

KEYS = {"tnr", "auroc", "dtacc", "auin", "auout"}


def sweep_reference(known: np.ndarray, unknown: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Plain-loop threshold sweep: accept a sample as known when score >= t, t over every distinct score."""
    n_k, n_u = len(known), len(unknown)
    thresholds = sorted(set(known.tolist()) | set(unknown.tolist())) + [np.inf]  # ascending
    points = []  # (tp, fp) from "accept all" to "reject all"
    for t in thresholds:
        tp = sum(1 for s in known if s >= t)
        fp = sum(1 for s in unknown if s >= t)
        points.append((tp, fp))
    tpr = [tp / n_k for tp, _ in points]
    tnr = [1 - fp / n_u for _, fp in points]

    best_distance = min(abs(r - level) for r in tpr)
    # the lowest threshold among the closest points (points are ascending in threshold)
    first_closest = next(i for i, r in enumerate(tpr) if abs(abs(r - level) - best_distance) <= 1e-12)
    tnr_at_level = tnr[first_closest]

    area_roc = 0.0
    for i in range(len(points) - 1):  # (fpr, tpr) from (1, 1) down to (0, 0)
        fpr_a, fpr_b = 1 - tnr[i], 1 - tnr[i + 1]
        area_roc += (fpr_a - fpr_b) * (tpr[i] + tpr[i + 1]) / 2

    dtacc = max((r + s) / 2 for r, s in zip(tpr, tnr, strict=False))

    # AUIN: (recall, precision) of the accepted set, closed by (0, 0) where nothing is accepted
    pr_in = [(tp / n_k, tp / (tp + fp)) if tp + fp > 0 else (0.0, 0.0) for tp, fp in points]
    auin = sum((pr_in[i][0] - pr_in[i + 1][0]) * (pr_in[i][1] + pr_in[i + 1][1]) / 2 for i in range(len(points) - 1))
    # AUOUT: the rejected set with unknowns positive, closed by (0, 0) where nothing is rejected
    pr_out = []
    for tp, fp in points:
        rejected_unknown, rejected = n_u - fp, (n_k - tp) + (n_u - fp)
        pr_out.append((rejected_unknown / n_u, rejected_unknown / rejected) if rejected > 0 else (0.0, 0.0))
    auout = sum((pr_out[i + 1][0] - pr_out[i][0]) * (pr_out[i][1] + pr_out[i + 1][1]) / 2
                for i in range(len(points) - 1))
    return {"tnr": tnr_at_level, "auroc": area_roc, "dtacc": dtacc, "auin": auin, "auout": auout}


def arpl_walk(known: np.ndarray, unknown: np.ndarray) -> dict[str, float]:
    """ARPL's evaluation convention: remove the lowest remaining sample one at a time (unknowns first only
    when strictly lower), TNR at the first point whose TPR is closest to 95 %, trapezoids over the walk."""
    known, unknown = np.sort(known), np.sort(unknown)
    n_k, n_u = len(known), len(unknown)
    tp, fp = [n_k], [n_u]
    k = n = 0
    while k < n_k or n < n_u:
        if k < n_k and (n == n_u or not unknown[n] < known[k]):
            k += 1
        else:
            n += 1
        tp.append(n_k - k)
        fp.append(n_u - n)
    tp, fp = np.array(tp, float), np.array(fp, float)
    tpr, fpr = tp / n_k, fp / n_u
    pos = int(np.argmin(np.abs(tpr - 0.95)))
    result = {"tnr": 1 - fpr[pos], "dtacc": float(np.max(0.5 * (tpr + 1 - fpr)))}
    result["auroc"] = float(-np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    accepted = tp + fp
    keep = accepted > 0
    recall_in = np.append(tpr[keep], 0.0)
    precision_in = np.append(tp[keep] / accepted[keep], 0.0)
    result["auin"] = float(-np.sum(np.diff(recall_in) * (precision_in[1:] + precision_in[:-1]) / 2))
    rejected = (n_k - tp) + (n_u - fp)
    keep = rejected > 0
    recall_out = np.insert((n_u - fp[keep]) / n_u, 0, 0.0)
    precision_out = np.insert((n_u - fp[keep]) / rejected[keep], 0, 0.0)
    result["auout"] = float(np.sum(np.diff(recall_out) * (precision_out[1:] + precision_out[:-1]) / 2))
    return result


def assert_metrics(got: dict, expected: dict, tol: float = 1e-12) -> None:
    assert set(got) == KEYS
    for key in KEYS:
        assert got[key] == pytest.approx(expected[key], abs=tol), key


@pytest.mark.parametrize("seed", range(4))
def test_matches_written_out_sweep_on_continuous_scores(seed):
    rng = np.random.default_rng(seed)
    known = rng.normal(1.0, 1.0, 120)
    unknown = rng.normal(0.0, 1.3, 70)
    assert_metrics(ood_metrics(known, unknown), sweep_reference(known, unknown))


@pytest.mark.parametrize("seed", range(4))
def test_matches_written_out_sweep_with_ties(seed):
    rng = np.random.default_rng(100 + seed)
    known = rng.integers(0, 8, 57).astype(float)
    unknown = rng.integers(-3, 5, 41).astype(float)
    got = ood_metrics(known, unknown)
    assert_metrics(got, sweep_reference(known, unknown))
    assert got["auroc"] == pytest.approx(auroc(known, unknown), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_equals_arpl_walk_without_ties(seed):
    rng = np.random.default_rng(200 + seed)
    known = rng.normal(0.8, 1.0, 300)
    unknown = rng.normal(0.0, 1.0, 200)
    assert_metrics(ood_metrics(known, unknown), arpl_walk(known, unknown), tol=1e-9)


def test_perfect_separation():
    known = np.linspace(1.0, 2.0, 40)  # 40 knowns: TPR 0.95 is reachable (38 of 40)
    unknown = np.linspace(-1.0, 0.5, 25)
    got = ood_metrics(known, unknown)
    assert got["tnr"] == 1.0 and got["auroc"] == 1.0 and got["dtacc"] == 1.0
    # the precision-recall curves are closed at (recall 0, precision 0): one half-step of area is lost
    assert got["auin"] == pytest.approx(1 - 1 / (2 * 40), abs=1e-12)
    assert got["auout"] == pytest.approx(1 - 1 / (2 * 25), abs=1e-12)


def test_reversed_separation():
    got = ood_metrics(np.linspace(-1, 0, 20), np.linspace(1, 2, 20))
    assert got["auroc"] == 0.0
    assert got["dtacc"] == 0.5  # only "accept all" / "reject all" reach it
    assert got["tnr"] == 0.0


def test_identical_distributions():
    values = np.arange(200.0)
    got = ood_metrics(values, values.copy())
    # every threshold accepts as many knowns as unknowns: TPR = FPR everywhere
    assert got["auroc"] == pytest.approx(0.5)
    assert got["dtacc"] == pytest.approx(0.5)
    assert got["tnr"] == pytest.approx(0.05)  # TPR 0.95 exactly, FPR 0.95 too
    # precision is 1/2 at every threshold; the closing segment from (0, 0) to (1/200, 1/2) loses 1/800
    assert got["auin"] == pytest.approx(0.5 - 0.25 / 200)
    assert got["auout"] == pytest.approx(0.5 - 0.25 / 200)


def test_constant_scores_are_one_tie():
    got = ood_metrics(np.full(30, 0.7), np.full(50, 0.7))
    # two operating points only: accept all (TPR 1, TNR 0) and reject all (TPR 0, TNR 1)
    assert got == pytest.approx({"tnr": 0.0, "auroc": 0.5, "dtacc": 0.5, "auin": 0.5 * 30 / 80,
                                 "auout": 0.5 * 50 / 80})


def test_known_tpr95_point():
    known = np.arange(1.0, 101.0)  # 100 knowns 1..100: t = 6 accepts exactly 95 of them
    # 20 unknowns: 3 at or above 6 (accepted there), 17 at or below 4.5 (no threshold in (5, 6) exists)
    unknown = np.concatenate([np.array([6.0, 50.5, 99.5]), np.linspace(-5.0, 4.5, 17)])
    got = ood_metrics(known, unknown)
    assert got["tnr"] == pytest.approx(17 / 20)


def test_tpr_closest_to_level_prefers_the_lower_threshold():
    # 3 knowns: reachable TPRs 0, 1/3, 2/3, 1 -> 1 is closest to 0.95; among the thresholds with TPR 1 the
    # lowest accepts every unknown below the knowns too, as ARPL's first-index argmin picks it
    got = ood_metrics(np.array([5.0, 6.0, 7.0]), np.array([1.0, 2.0]))
    assert got["tnr"] == 0.0


def test_accepts_tensors_and_rejects_bad_input():
    known, unknown = torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0.1, 0.75])
    assert ood_metrics(known, unknown) == pytest.approx(ood_metrics(known.numpy(), unknown.numpy()))
    with pytest.raises(ValueError, match="empty"):
        ood_metrics(np.array([]), np.array([1.0]))
    with pytest.raises(ValueError, match="non-finite"):
        ood_metrics(np.array([np.nan]), np.array([1.0]))
