"""Contrastive losses against NumPy loop references, closed forms, and autograd's gradcheck."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastgradmix.training.objectives.losses import (
    contrastive_loss,
    contrastive_loss_per_anchor,
    gradmix_objective,
    mix_loss_per_sample,
    simclr_loss,
    supcon_loss,
)


def _log_sum_exp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def reference_contrastive(features: np.ndarray, labels: np.ndarray, temperature: float, negatives_only: bool):
    """Literal float64 double loop over anchors and positives; returns (mean loss, per-anchor, counted)."""
    features = np.asarray(features, dtype=np.float64)
    count = len(features)
    per_anchor = np.zeros(count)
    counted = np.zeros(count, dtype=bool)
    for i in range(count):
        logits = [float(features[i] @ features[k]) / temperature for k in range(count)]
        positives = [k for k in range(count) if k != i and labels[k] == labels[i]]
        negatives = [k for k in range(count) if k != i and labels[k] != labels[i]]
        denominator = negatives if negatives_only else positives + negatives
        if not positives or not denominator:
            continue
        log_denominator = _log_sum_exp([logits[k] for k in denominator])
        per_anchor[i] = -np.mean([logits[p] - log_denominator for p in positives])
        counted[i] = True
    mean = per_anchor[counted].mean() if counted.any() else 0.0
    return mean, per_anchor, counted


def reference_mix(z_mix: np.ndarray, z1: np.ndarray, z2: np.ndarray, temperature: float, negatives_only: bool):
    """l_mix(i) by loops: positive z2[i], negatives z1[j], z2[j] for j != i, z1[i] left out."""
    z_mix, z1, z2 = (np.asarray(z, dtype=np.float64) for z in (z_mix, z1, z2))
    count = len(z1)
    losses = np.zeros(count)
    for i in range(count):
        positive_logit = float(z_mix[i] @ z2[i]) / temperature
        negative_logits = [float(z_mix[i] @ z[j]) / temperature for j in range(count) if j != i for z in (z1, z2)]
        denominator = negative_logits if negatives_only else [positive_logit] + negative_logits
        if not denominator:
            continue
        losses[i] = -(positive_logit - _log_sum_exp(denominator))
    return losses


def unit_features(count: int, dim: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(count, dim, generator=generator, dtype=torch.float64), dim=1).to(dtype)


@pytest.mark.parametrize("negatives_only", [False, True])
@pytest.mark.parametrize("temperature", [0.05, 0.5])
@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_contrastive_loss_matches_numpy_loop(negatives_only, temperature, dtype, tolerance):
    features = unit_features(24, 16, seed=0, dtype=dtype)
    labels = torch.randint(0, 4, (24,), generator=torch.Generator().manual_seed(1))  # ~6 per class
    expected, expected_per_anchor, expected_counted = reference_contrastive(
        features.numpy(), labels.numpy(), temperature, negatives_only
    )
    assert expected_counted.all()  # every anchor has several positives here

    loss = contrastive_loss(features, labels, temperature, negatives_only)
    assert loss.dtype == dtype and loss.shape == ()
    assert loss.item() == pytest.approx(expected, rel=tolerance, abs=tolerance)

    not_self = ~torch.eye(24, dtype=torch.bool)
    per_anchor, has_positive = contrastive_loss_per_anchor(
        features, features, (labels[:, None] == labels[None, :]) & not_self, not_self, temperature, negatives_only
    )
    np.testing.assert_allclose(per_anchor.numpy(), expected_per_anchor, rtol=tolerance, atol=tolerance)
    np.testing.assert_array_equal(has_positive.numpy(), expected_counted)


def test_anchors_against_a_separate_bank_match_numpy_loop():
    # the distributed layout: local anchors are rows 4..9 of a global bank of 14
    bank = unit_features(14, 8, seed=2)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 3])
    anchor_rows = torch.arange(4, 10)
    valid = torch.ones(6, 14, dtype=torch.bool)
    valid[torch.arange(6), anchor_rows] = False
    positives = (labels[anchor_rows][:, None] == labels[None, :]) & valid
    loss, has_positive = contrastive_loss_per_anchor(bank[anchor_rows], bank, positives, valid, 0.1)
    _, expected, _ = reference_contrastive(bank.numpy(), labels.numpy(), 0.1, False)
    np.testing.assert_allclose(loss.numpy(), expected[4:10], rtol=2e-5, atol=2e-5)
    assert has_positive.all()


@pytest.mark.parametrize("temperature", [0.5, 0.05])
def test_simclr_closed_form_on_orthogonal_views(temperature):
    # views [e1, e2] twice: each anchor sees its positive at cosine 1 and two negatives at cosine 0
    z = torch.eye(2)
    default = simclr_loss(z, z.clone(), temperature)
    assert default.item() == pytest.approx(math.log(1 + 2 * math.exp(-1 / temperature)), rel=1e-6, abs=1e-7)
    negatives_only = simclr_loss(z, z.clone(), temperature, negatives_only=True)
    assert negatives_only.item() == pytest.approx(math.log(2) - 1 / temperature, rel=1e-6)


def test_identical_pair_without_negatives_has_zero_loss():
    # the positive is the whole denominator: log-softmax of a single entry is 0
    z = F.normalize(torch.tensor([[1.0, 2.0]]), dim=1)
    assert simclr_loss(z, z.clone()).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("negatives_only", [False, True])
def test_supcon_with_distinct_labels_is_simclr(negatives_only):
    z1, z2 = unit_features(8, 6, seed=3), unit_features(8, 6, seed=4)
    supcon = supcon_loss(z1, z2, torch.arange(8), 0.1, negatives_only)
    simclr = simclr_loss(z1, z2, 0.1, negatives_only)
    torch.testing.assert_close(supcon, simclr, rtol=0, atol=0)


def test_supcon_matches_numpy_loop_on_both_views():
    z1, z2 = unit_features(10, 6, seed=5), unit_features(10, 6, seed=6)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 3, 3])
    expected, _, _ = reference_contrastive(
        torch.cat([z1, z2]).numpy(), np.concatenate([labels.numpy()] * 2), 0.05, False
    )
    assert supcon_loss(z1, z2, labels).item() == pytest.approx(expected, rel=2e-5)


@pytest.mark.parametrize("negatives_only", [False, True])
def test_anchors_without_positives_are_excluded_with_finite_gradients(negatives_only):
    features = unit_features(6, 5, seed=7, dtype=torch.float64).requires_grad_(True)
    labels = torch.tensor([0, 0, 1, 2, 2, 3])  # anchors 2 and 5 have no positive
    loss = contrastive_loss(features, labels, 0.05, negatives_only)
    loss.backward()
    expected, _, counted = reference_contrastive(features.detach().numpy(), labels.numpy(), 0.05, negatives_only)
    np.testing.assert_array_equal(counted, [True, True, False, True, True, False])
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    assert torch.isfinite(features.grad).all()


@pytest.mark.parametrize(
    "labels, negatives_only",
    [
        (torch.arange(5), False),  # nobody has a positive
        (torch.zeros(5, dtype=torch.long), True),  # everybody is positive: no negatives to contrast
    ],
)
def test_no_counted_anchor_gives_differentiable_zero(labels, negatives_only):
    features = unit_features(5, 4, seed=8).requires_grad_(True)
    loss = contrastive_loss(features, labels, 0.05, negatives_only)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(features.grad, torch.zeros_like(features))


def test_per_anchor_with_empty_valid_row_is_zero_and_finite():
    anchors = unit_features(3, 4, seed=9).requires_grad_(True)
    bank = unit_features(5, 4, seed=10).requires_grad_(True)
    valid = torch.ones(3, 5, dtype=torch.bool)
    valid[1] = False  # anchor 1 sees nothing at all
    positives = torch.zeros(3, 5, dtype=torch.bool)
    positives[0, 2] = positives[1, 3] = positives[2, 4] = True
    loss, has_positive = contrastive_loss_per_anchor(anchors, bank, positives, valid, 0.05)
    assert has_positive.tolist() == [True, False, True]
    assert loss[1].item() == 0.0 and torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(anchors.grad).all() and torch.isfinite(bank.grad).all()
    assert torch.equal(anchors.grad[1], torch.zeros(4))


def test_tiny_temperature_stays_finite_and_exact():
    # temperature 0.002 puts logits at +-500: exp() overflows fp32 without the max shift
    features = unit_features(12, 4, seed=11)
    labels = torch.tensor([0, 1, 2] * 4)
    expected, _, _ = reference_contrastive(features.numpy(), labels.numpy(), 0.002, False)
    features.requires_grad_(True)
    loss = contrastive_loss(features, labels, 0.002)
    loss.backward()
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert torch.isfinite(features.grad).all()


def test_autocast_bf16_still_computes_in_fp32():
    z1, z2 = unit_features(16, 32, seed=12), unit_features(16, 32, seed=13)
    z_mix = unit_features(16, 32, seed=14)
    labels = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(15))
    plain = gradmix_objective(z1, z2, labels, z_mix, torch.full((16,), 0.2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = gradmix_objective(z1, z2, labels, z_mix, torch.full((16,), 0.2))
        half_inputs = supcon_loss(z1.bfloat16(), z2.bfloat16(), labels)
    for key in plain:
        assert cast[key].dtype == torch.float32
        assert cast[key].item() == pytest.approx(plain[key].item(), abs=1e-6, rel=1e-6)
    assert half_inputs.dtype == torch.float32  # bf16 features are upcast, not computed in bf16


@pytest.mark.parametrize("negatives_only", [False, True])
def test_mix_loss_matches_numpy_loop(negatives_only):
    z_mix, z1, z2 = (unit_features(9, 7, seed=s) for s in (16, 17, 18))
    losses = mix_loss_per_sample(z_mix, z1, z2, 0.05, negatives_only)
    expected = reference_mix(z_mix.numpy(), z1.numpy(), z2.numpy(), 0.05, negatives_only)
    assert losses.shape == (9,)
    np.testing.assert_allclose(losses.numpy(), expected, rtol=2e-5, atol=2e-5)


def test_mix_loss_ignores_the_first_view_of_the_same_image():
    z_mix, z1, z2 = (unit_features(5, 7, seed=s) for s in (19, 20, 21))
    changed_z1 = z1.clone()
    changed_z1[2] = unit_features(1, 7, seed=22)[0]
    before, after = mix_loss_per_sample(z_mix, z1, z2), mix_loss_per_sample(z_mix, changed_z1, z2)
    torch.testing.assert_close(after[2], before[2], rtol=0, atol=0)
    assert not torch.allclose(after[0], before[0])  # z1[2] is a negative of the other images


def test_gradmix_objective_combines_the_terms():
    z1, z2, z_mix = (unit_features(8, 6, seed=s, dtype=torch.float64) for s in (23, 24, 25))
    labels = torch.tensor([0, 1, 0, 1, 2, 2, 0, 1])
    weights = torch.linspace(0.01, 0.25, 8, dtype=torch.float64)
    out = gradmix_objective(z1, z2, labels, z_mix, weights, theta=0.7, lam=1.3, temperature=0.1)

    views, both_labels = torch.cat([z1, z2]).numpy(), np.concatenate([labels.numpy()] * 2)
    supcon, _, _ = reference_contrastive(views, both_labels, 0.1, False)
    simclr, _, _ = reference_contrastive(views, np.concatenate([np.arange(8)] * 2), 0.1, False)
    mix = np.mean(weights.numpy() * reference_mix(z_mix.numpy(), z1.numpy(), z2.numpy(), 0.1, False))
    assert out["supcon"].item() == pytest.approx(supcon, rel=1e-10)
    assert out["simclr"].item() == pytest.approx(simclr, rel=1e-10)
    assert out["mix"].item() == pytest.approx(mix, rel=1e-10)
    assert out["loss"].item() == pytest.approx(0.7 * supcon + 1.3 * (simclr + mix), rel=1e-10)

    without_mix = gradmix_objective(z1, z2, labels, theta=0.7, lam=1.3, temperature=0.1)
    assert without_mix["mix"].item() == 0.0 and without_mix["mix"].shape == ()
    assert without_mix["loss"].item() == pytest.approx(0.7 * supcon + 1.3 * simclr, rel=1e-10)

    unweighted = gradmix_objective(z1, z2, labels, z_mix, temperature=0.1)
    plain_mix = reference_mix(z_mix.numpy(), z1.numpy(), z2.numpy(), 0.1, False).mean()
    assert unweighted["mix"].item() == pytest.approx(plain_mix, rel=1e-10)


@pytest.mark.parametrize("negatives_only", [False, True])
def test_gradients_match_gradcheck(negatives_only):
    # raw (unnormalised) float64 features at a mild temperature keep finite differences accurate;
    # label 3 is a singleton, so the masked no-positive path is differentiated too
    generator = torch.Generator().manual_seed(26)
    features = (0.5 * torch.randn(6, 3, generator=generator, dtype=torch.float64)).requires_grad_(True)
    labels = torch.tensor([0, 0, 1, 1, 1, 3])
    assert torch.autograd.gradcheck(
        lambda f: contrastive_loss(f, labels, 0.5, negatives_only), (features,), eps=1e-6, atol=1e-7
    )

    z_mix, z1, z2 = (
        (0.5 * torch.randn(4, 3, generator=generator, dtype=torch.float64)).requires_grad_(True) for _ in range(3)
    )
    weights = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda m, a, b: gradmix_objective(
            a, b, torch.tensor([0, 1, 0, 1]), m, weights, temperature=0.5, negatives_only=negatives_only
        )["loss"],
        (z_mix, z1, z2),
        eps=1e-6,
        atol=1e-7,
    )
