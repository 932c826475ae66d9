"""Mixup and CutMix batch ops against per-sample loops given the same draws; Beta draws against scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from host_reads import ForbidHostReads
from scipy import stats

from fastgradmix.training.mixed_views.pixel import (
    MIXING_AUGS,
    cutmix,
    cutmix_boxes,
    mixed_view,
    mixup,
    sample_beta,
    sample_cutmix_boxes,
)


def loop_mixup(images: np.ndarray, partner: np.ndarray, lam: np.ndarray):
    out = np.empty_like(images)
    for i in range(len(images)):
        out[i] = lam[i] * images[i] + (1 - lam[i]) * images[partner[i]]
    return out, 1 - lam


def loop_cutmix_box(lam: float, cy: int, cx: int, height: int, width: int):
    """CutMix's rand_bbox, written out for one sample: (top, left, box_h, box_w)."""
    cut_h = int(height * math.sqrt(1 - lam))
    cut_w = int(width * math.sqrt(1 - lam))
    y0, x0 = cy - cut_h // 2, cx - cut_w // 2
    y1, x1 = y0 + cut_h, x0 + cut_w
    y0, y1 = min(max(y0, 0), height), min(max(y1, 0), height)
    x0, x1 = min(max(x0, 0), width), min(max(x1, 0), width)
    return y0, x0, y1 - y0, x1 - x0


def loop_cutmix(images: np.ndarray, partner: np.ndarray, boxes):
    out = images.copy()
    height, width = images.shape[-2:]
    weights = []
    for i, (top, left, box_h, box_w) in enumerate(boxes):
        out[i, :, top:top + box_h, left:left + box_w] = images[partner[i], :, top:top + box_h, left:left + box_w]
        weights.append(box_h * box_w / (height * width))
    return out, np.array(weights)


@pytest.mark.parametrize("channels_last", [False, True])
def test_mixup_matches_per_sample_loop(channels_last):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(7, 3, 9, 5, generator=generator)
    partner = torch.tensor([3, 3, 0, 6, 1, 2, 4])  # any index works, repeats included
    lam = torch.tensor([0.0, 1.0, 0.5, 0.25, 0.9, 0.33, 0.71])
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    mixed, weights = mixup(images, partner, lam)
    expected, expected_weights = loop_mixup(images.numpy(), partner.numpy(), lam.numpy())
    np.testing.assert_allclose(mixed.numpy(), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(weights.numpy(), expected_weights, rtol=1e-6)
    assert mixed.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert mixed.dtype == images.dtype


def test_mixup_keeps_half_precision():
    images = torch.randn(4, 2, 6, 6).bfloat16()
    lam = torch.tensor([0.2, 0.4, 0.6, 0.8])
    mixed, _ = mixup(images, torch.tensor([1, 2, 3, 0]), lam)
    expected, _ = loop_mixup(images.float().numpy(), np.array([1, 2, 3, 0]), lam.numpy())
    assert mixed.dtype == torch.bfloat16
    np.testing.assert_allclose(mixed.float().numpy(), expected, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("height,width", [(32, 32), (13, 7), (5, 5), (1, 9)])
def test_cutmix_boxes_match_the_cutmix_formula(height, width):
    generator = torch.Generator().manual_seed(height * 100 + width)
    n = 300
    lam = torch.rand(n, generator=generator)
    lam[:4] = torch.tensor([0.0, 1.0, 0.5, 1e-7])  # whole image, empty box, half, nearly whole
    center_y = torch.randint(0, height, (n,), generator=generator)
    center_x = torch.randint(0, width, (n,), generator=generator)
    top, left, box_h, box_w = cutmix_boxes(lam, center_y, center_x, height, width)
    for i in range(n):
        expected = loop_cutmix_box(float(lam[i]), int(center_y[i]), int(center_x[i]), height, width)
        assert (int(top[i]), int(left[i]), int(box_h[i]), int(box_w[i])) == expected, i
    assert int(box_h[1]) == 0 or int(box_w[1]) == 0  # lam = 1: nothing pasted


@pytest.mark.parametrize("channels_last", [False, True])
def test_cutmix_matches_per_sample_loop(channels_last):
    generator = torch.Generator().manual_seed(1)
    n, height, width = 9, 12, 10
    images = torch.randn(n, 3, height, width, generator=generator)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    partner = torch.randperm(n, generator=generator)
    lam = torch.rand(n, generator=generator)
    lam[0], lam[1] = 0.0, 1.0
    top, left, box_h, box_w = sample_cutmix_boxes(lam, height, width, generator)
    mixed, weights = cutmix(images, partner, top, left, box_h, box_w)
    boxes = list(zip(top.tolist(), left.tolist(), box_h.tolist(), box_w.tolist(), strict=True))
    expected, expected_weights = loop_cutmix(images.numpy(), partner.numpy(), boxes)
    np.testing.assert_array_equal(mixed.numpy(), expected)  # a copy, bit for bit
    np.testing.assert_allclose(weights.numpy(), expected_weights, rtol=1e-6)
    assert mixed.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_cutmix_weight_is_the_fraction_of_changed_pixels():
    # with all-distinct images, the pasted area is exactly where the output differs from the input
    generator = torch.Generator().manual_seed(2)
    images = torch.arange(6 * 1 * 16 * 16, dtype=torch.float32).view(6, 1, 16, 16)
    partner = torch.tensor([1, 2, 3, 4, 5, 0])
    lam = torch.rand(6, generator=generator)
    mixed, weights = cutmix(images, partner, *sample_cutmix_boxes(lam, 16, 16, generator))
    changed = (mixed != images).float().mean(dim=(1, 2, 3))
    assert torch.allclose(changed, weights)


@pytest.mark.parametrize("alpha", [0.2, 1.0, 2.0])
def test_beta_draws_follow_beta_alpha_alpha(alpha):
    # float64: in fp32 the ~2% of Beta(0.2, 0.2) draws within 6e-8 of 1 become exactly 1, which KS sees
    lam = sample_beta(20000, alpha, torch.Generator().manual_seed(0), torch.device("cpu"), torch.float64).numpy()
    assert lam.min() >= 0 and lam.max() <= 1
    assert abs(lam.mean() - 0.5) < 0.01
    assert abs(lam.var() - 1 / (4 * (2 * alpha + 1))) < 0.01  # Beta(a, a) variance
    assert stats.kstest(lam, stats.beta(alpha, alpha).cdf).pvalue > 1e-3


def test_tiny_alpha_gives_no_nan():
    # Gamma(0.01) draws underflow float64 about once in a thousand; the log-space draw must not care
    lam = sample_beta(50000, 0.01, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert torch.isfinite(lam).all() and lam.min() >= 0 and lam.max() <= 1
    assert ((lam < 1e-3) | (lam > 1 - 1e-3)).float().mean() > 0.8  # Beta(0.01, 0.01) sits at 0 and 1


def test_bad_alpha_raises():
    with pytest.raises(ValueError, match="alpha > 0"):
        sample_beta(4, 0.0, torch.Generator(), torch.device("cpu"))
    with pytest.raises(ValueError, match="unknown mixing"):
        mixed_view("gradmix", torch.zeros(2, 1, 4, 4), 1.0, torch.Generator())


@pytest.mark.parametrize("aug", MIXING_AUGS)
def test_mixed_view_is_reproducible_and_pairs_with_others(aug):
    images = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    first = mixed_view(aug, images, 1.0, torch.Generator().manual_seed(5))
    second = mixed_view(aug, images, 1.0, torch.Generator().manual_seed(5))
    assert torch.equal(first.images, second.images) and torch.equal(first.weights, second.weights)
    assert not (first.partner == torch.arange(8)).any()  # never mixed with itself
    assert first.weights.dtype == torch.float32 and ((first.weights >= 0) & (first.weights <= 1)).all()
    if aug == "mixup":
        assert torch.allclose(first.weights, 1 - first.lam)
    else:
        # the clipped box takes at most the 1 - lam the draw asked for
        assert (first.weights <= 1 - first.lam + 1e-6).all()


@pytest.mark.parametrize("aug", MIXING_AUGS)
def test_mixed_view_reads_nothing_back_to_the_host(aug):
    images = torch.randn(6, 3, 8, 8)
    with ForbidHostReads():
        result = mixed_view(aug, images, 0.4, torch.Generator().manual_seed(0))
    assert result.images.shape == images.shape
