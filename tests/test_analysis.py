"""TwoNN on data of known intrinsic dimension, its neighbours against scikit-learn, its estimators against
the Pareto law, and the activated area on hand-made maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.neighbors import NearestNeighbors

from fastgradmix.evaluation.diversity_measures import (
    DEFAULT_AREA_THRESHOLDS,
    activated_area,
    area_thresholds,
    two_nearest_distances,
    twonn_dimension,
    twonn_dimension_from_ratios,
    twonn_per_class,
    twonn_ratios,
)
from fastgradmix.evaluation.diversity_task import raw_layercam


def _subspace_points(n: int, d: int, ambient: int, seed: int) -> torch.Tensor:
    """n Gaussian points on a random d-dimensional linear subspace of R^ambient (no boundary to bias TwoNN)."""
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(ambient, d, generator=generator, dtype=torch.float64))  # (D, d)
    return torch.randn(n, d, generator=generator, dtype=torch.float64) @ basis.T + 3.0  # off the origin too


@pytest.mark.parametrize("method", ["fit", "mle"])
@pytest.mark.parametrize("d", [2, 5, 10])
def test_twonn_recovers_the_dimension_of_a_linear_subspace(d, method):
    points = _subspace_points(2000, d, ambient=30, seed=d).float()
    estimate = twonn_dimension(points, method=method)
    # the estimator's spread at N = 2000 is about d / sqrt(N), ~2%; 10% leaves room for its small bias
    assert estimate == pytest.approx(d, rel=0.1)


def test_twonn_of_a_circle_in_r3_is_one():
    generator = torch.Generator().manual_seed(0)
    angle = torch.rand(2000, generator=generator, dtype=torch.float64) * 2 * math.pi
    circle = torch.stack([angle.cos(), angle.sin(), torch.zeros_like(angle)], dim=1)  # (N, 3)
    rotation, _ = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    assert twonn_dimension(circle @ rotation.T) == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("chunk_size", [1, 7, 1024])
def test_two_nearest_distances_match_sklearn(chunk_size):
    points = torch.randn(300, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    distances = two_nearest_distances(points, chunk_size=chunk_size).numpy()
    # sklearn returns each point itself first (distance 0), then its neighbours
    reference, _ = NearestNeighbors(n_neighbors=3).fit(points.numpy()).kneighbors(points.numpy())
    np.testing.assert_allclose(distances, reference[:, 1:], rtol=1e-9)


def test_duplicates_are_left_out_of_the_ratios():
    points = torch.randn(50, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    points = torch.cat([points, points[:5]])  # 5 points appear twice: 10 of the 55 have a duplicate
    ratios = twonn_ratios(points)
    assert ratios.numel() == 55 - 10 and torch.isfinite(ratios).all() and (ratios >= 1).all()


@pytest.mark.parametrize("d", [1.0, 3.5, 12.0])
def test_estimators_recover_the_exponent_of_exact_pareto_ratios(d):
    # mu = U^(-1/d) has P(mu > x) = x^-d exactly: the law TwoNN assumes
    uniform = torch.rand(100000, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    mu = uniform.pow(-1 / d)
    mle = twonn_dimension_from_ratios(mu, method="mle")
    # scipy's maximum-likelihood Pareto fit with the scale fixed at 1 is the same estimator
    shape, _, _ = stats.pareto.fit(mu.numpy(), floc=0, fscale=1)
    assert mle == pytest.approx(shape, rel=1e-6)
    assert mle == pytest.approx(d, rel=0.02)
    for discard in (0.0, 0.1):
        assert twonn_dimension_from_ratios(mu, method="fit", discard_fraction=discard) == pytest.approx(d, rel=0.02)


def test_fit_is_the_least_squares_line_through_the_origin():
    mu = torch.tensor([1.5, 1.1, 3.0, 2.0, 1.2, 1.3, 4.0, 1.05, 2.5, 1.8], dtype=torch.float64)
    # written out: sorted log mu against -log(1 - i/N), i = 1..N (the CDF starts at 1/N), for the first 90% (9 of 10)
    x = np.log(np.sort(mu.numpy()))[:9]
    y = -np.log(1 - np.arange(1, 11) / 10)[:9]
    slope = np.linalg.lstsq(x[:, None], y, rcond=None)[0][0]
    assert twonn_dimension_from_ratios(mu, method="fit", discard_fraction=0.1) == pytest.approx(slope, rel=1e-12)


def test_twonn_rejects_bad_input():
    with pytest.raises(ValueError):
        twonn_dimension(torch.randn(2, 4))
    with pytest.raises(ValueError, match="method"):
        twonn_dimension_from_ratios(torch.tensor([1.5, 2.0]), method="median")


def test_activated_area_on_hand_made_maps():
    maps = torch.tensor([
        [[0.0, 2e-5], [5e-4, 1.0]],  # above 1e-5: 3 of 4; above 1e-4: 2; above 1e-3: 1
        [[1e-4, 1e-4], [0.0, 0.0]],  # equal to the threshold is not above it: 2, 0, 0
    ])
    per_map = activated_area(maps, [1e-5, 1e-4, 1e-3], per_map=True)
    expected = torch.tensor([[0.75, 0.5, 0.25], [0.5, 0.0, 0.0]], dtype=torch.float64)
    assert torch.equal(per_map, expected)
    assert torch.equal(activated_area(maps, [1e-5, 1e-4, 1e-3]), expected.mean(dim=0))


def test_activated_area_of_a_disc():
    # a disc of radius 20 px set to 1e-4 on a zero 64 x 64 map, plus one hot pixel
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    disc = ((yy - 32) ** 2 + (xx - 32) ** 2) <= 20**2
    maps = torch.where(disc, 1e-4, 0.0).unsqueeze(0)  # (1, 64, 64)
    maps[0, 0, 0] = 1.0
    area = activated_area(maps, [5e-5, 5e-4])
    disc_pixels = int(disc.sum())
    assert area.tolist() == [(disc_pixels + 1) / 4096, 1 / 4096]


def test_default_thresholds_are_log_spaced_from_1e5_to_1e3():
    assert len(DEFAULT_AREA_THRESHOLDS) == 9
    assert DEFAULT_AREA_THRESHOLDS[0] == 1e-5 and DEFAULT_AREA_THRESHOLDS[-1] == 1e-3
    np.testing.assert_allclose(DEFAULT_AREA_THRESHOLDS, np.logspace(-5, -3, 9), rtol=1e-12)
    assert area_thresholds(1e-4, 1e-2, 3) == pytest.approx([1e-4, 1e-3, 1e-2])


@pytest.mark.slow
def test_twonn_on_ten_thousand_points_in_chunks():
    # 10k x 10k distances never exist at once: 512-row chunks hold 512 x 10k at a time (float32 here
    # for speed; the shortlist is re-measured exactly either way)
    points = _subspace_points(10000, 6, ambient=64, seed=7).float()
    assert twonn_dimension(points, chunk_size=512, dtype=torch.float32) == pytest.approx(6, rel=0.1)


def _slow_twonn(points: np.ndarray, discard: float = 0.1) -> float:
    """TwoNN written out: full distance matrix, sorted rows, CDF i / N from 1/N, least squares through 0."""
    distances = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(distances, np.inf)
    nearest = np.sort(distances, axis=1)[:, :2]
    mu = np.sort(nearest[:, 1] / nearest[:, 0])
    kept = int(len(mu) * (1 - discard))
    x = np.log(mu[:kept])
    y = -np.log(1 - np.arange(1, len(mu) + 1)[:kept] / len(mu))
    return float((x * y).sum() / (x * x).sum())


def test_per_class_twonn_equals_a_slow_loop_over_the_classes():
    generator = torch.Generator().manual_seed(4)
    # classes of different sizes and dimensions, interleaved, close enough that a pooled search would mix them
    sizes, dims = (40, 7, 120, 3), (2, 1, 5, 3)
    parts = [_subspace_points(n, d, 12, seed) for seed, (n, d) in enumerate(zip(sizes, dims, strict=True))]
    points = torch.cat(parts)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    order = torch.randperm(points.shape[0], generator=generator)
    points, labels = points[order], labels[order]
    mean, per_class = twonn_per_class(points, labels, chunk_size=16)
    expected = {c: _slow_twonn(points[labels == c].numpy()) for c in range(4)}
    assert per_class == pytest.approx(expected, rel=1e-9)
    assert mean == pytest.approx(np.mean(list(expected.values())), rel=1e-12)
    with pytest.raises(ValueError):  # a class of two points has no second neighbour: left out, not an error
        twonn_per_class(points[:2], labels[:2])
    _, small = twonn_per_class(torch.cat([points, torch.zeros(2, 12)]), torch.cat([labels, torch.tensor([9, 9])]))
    assert set(small) == {0, 1, 2, 3}


def test_raw_layercam_is_the_unnormalised_map_of_each_layer_side_by_side():
    generator = torch.Generator().manual_seed(5)
    acts = [torch.randn(3, 4, 2, 2, generator=generator), torch.randn(3, 6, 1, 3, generator=generator)]
    grads = [torch.randn(3, 4, 2, 2, generator=generator), torch.randn(3, 6, 1, 3, generator=generator)]
    maps = raw_layercam(acts, grads)  # (3, 1, 4 + 3)
    assert maps.shape == (3, 1, 7)
    for n in range(3):
        expected = []
        for a, g in zip(acts, grads, strict=True):
            a_, g_ = a[n].double().numpy(), g[n].double().numpy()
            expected += np.maximum((np.maximum(g_, 0) * a_).sum(0), 0).ravel().tolist()
        np.testing.assert_allclose(maps[n, 0].numpy(), expected, rtol=1e-5, atol=1e-7)
    # S_M of such maps: a NumPy count of the pixels above tau, over the layers' pixels together
    area = activated_area(maps, [1e-3, 0.5])
    flat = maps.double().numpy().reshape(3, -1)
    assert area.tolist() == pytest.approx([(flat > 1e-3).mean(), (flat > 0.5).mean()], abs=1e-12)
