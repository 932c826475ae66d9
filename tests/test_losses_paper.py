"""``--denominator negatives`` is exactly the paper's pair of equations, and the published l_mix and loss scale
are what their loops say: each objective term against a float64 loop of its equation.

eq. 1 (SimCLR): l(i) = -log exp(z_i . z_j(i) / tau) / sum_{k != i} exp(z_i . z_k / tau), the positive j(i) in
the denominator. eq. 2 (SupCon): l(i) = -1/|P(i)| sum_{p in P(i)} log exp(z_i . z_p / tau) /
sum_{n in N(i)} exp(z_i . z_n / tau), the negatives N(i) (other labels) only.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastgradmix.runs.config import merge
from fastgradmix.training.objectives import build_objective
from fastgradmix.training.objectives.losses import clean_anchor_mix_loss_per_sample

TAU = 0.1


def _logsumexp(values) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def eq1_simclr(z1: np.ndarray, z2: np.ndarray, tau: float) -> float:
    views = np.concatenate([z1, z2])
    n, total = len(z1), 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        logits = {k: float(views[i] @ views[k]) / tau for k in range(2 * n) if k != i}
        total += -(logits[j] - _logsumexp(list(logits.values())))
    return total / (2 * n)


def eq2_supcon(z1: np.ndarray, z2: np.ndarray, labels: np.ndarray, tau: float) -> float:
    views, both = np.concatenate([z1, z2]), np.concatenate([labels, labels])
    losses = []
    for i in range(len(views)):
        logits = {k: float(views[i] @ views[k]) / tau for k in range(len(views)) if k != i}
        positives = [k for k in logits if both[k] == both[i]]
        negatives = [k for k in logits if both[k] != both[i]]
        log_denominator = _logsumexp([logits[k] for k in negatives])
        losses.append(-np.mean([logits[p] - log_denominator for p in positives]))
    return float(np.mean(losses))


def eq1_mix(z_mix: np.ndarray, z1: np.ndarray, z2: np.ndarray, tau: float) -> np.ndarray:
    """l_mix(i) in eq. 1's form: anchor m_i, positive z2_i (in the denominator), negatives z1_j, z2_j, j != i."""
    out = []
    for i in range(len(z1)):
        positive = float(z_mix[i] @ z2[i]) / tau
        others = [float(z_mix[i] @ z[j]) / tau for j in range(len(z1)) if j != i for z in (z1, z2)]
        out.append(-(positive - _logsumexp([positive, *others])))
    return np.array(out)


def _unit(n: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=1)


@pytest.mark.parametrize("method", ["supcon+simclr", "supcon", "simclr"])
def test_negatives_denominator_is_eq1_for_simclr_and_eq2_for_supcon(method):
    z1, z2, z_mix = _unit(7, 1), _unit(7, 2), _unit(7, 3)
    labels = torch.tensor([0, 1, 0, 2, 1, 2, 0])
    cfg = merge(dict(protocol="cifar10", method=method, denominator="negatives", temperature=TAU, theta=0.6, lam=1.4))
    objective = build_objective(cfg, None)
    terms = objective.clean_terms(torch.cat([z1, z2]), labels)
    a, b, m, y = z1.numpy(), z2.numpy(), z_mix.numpy(), labels.numpy()
    if "supcon" in terms:
        assert terms["supcon"].item() == pytest.approx(eq2_supcon(a, b, y, TAU), rel=1e-12)
    if "simclr" in terms:
        assert terms["simclr"].item() == pytest.approx(eq1_simclr(a, b, TAU), rel=1e-12)
    expected_loss = {"supcon+simclr": 0.6 * eq2_supcon(a, b, y, TAU) + 1.4 * eq1_simclr(a, b, TAU),
                     "supcon": 0.6 * eq2_supcon(a, b, y, TAU), "simclr": 1.4 * eq1_simclr(a, b, TAU)}[method]
    assert terms["loss"].item() == pytest.approx(expected_loss, rel=1e-12)
    mix = objective.mix_per_sample(z_mix, detach_clean=False)
    np.testing.assert_allclose(mix.numpy(), eq1_mix(m, a, b, TAU), rtol=1e-12)


def test_the_default_denominator_keeps_every_other_feature_in_supcon():
    z1, z2 = _unit(6, 4), _unit(6, 5)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    objective = build_objective(merge(dict(protocol="cifar10", temperature=TAU)), None)
    supcon = objective.clean_terms(torch.cat([z1, z2]), labels)["supcon"].item()
    views, both = torch.cat([z1, z2]).numpy(), np.concatenate([labels.numpy()] * 2)
    losses = []
    for i in range(12):  # Khosla et al.: every k != i in the denominator
        logits = {k: float(views[i] @ views[k]) / TAU for k in range(12) if k != i}
        log_denominator = _logsumexp(list(logits.values()))
        losses.append(-np.mean([logits[p] - log_denominator for p in logits if both[p] == both[i]]))
    assert supcon == pytest.approx(float(np.mean(losses)), rel=1e-12)
    assert supcon != pytest.approx(eq2_supcon(z1.numpy(), z2.numpy(), labels.numpy(), TAU), rel=1e-3)


def test_published_clean_anchor_mix_loss_matches_its_loop():
    """--mix-anchors clean: anchors z1_i (positive f(v2)_i) and z2_i (positive f(m)_i), denominators the clean
    features but the anchor; image i's loss is the mean of its two anchors'."""
    z1, z2, z_mix, z_second = _unit(5, 6), _unit(5, 7), _unit(5, 8), _unit(5, 9)
    got = clean_anchor_mix_loss_per_sample(z_mix, z_second, z1, z2, TAU)
    clean = torch.cat([z1, z2]).numpy()
    expected = []
    for i in range(5):
        per_anchor = []
        for a, positive in ((i, z_second[i].numpy()), (5 + i, z_mix[i].numpy())):
            denominator = [float(clean[a] @ clean[k]) / TAU for k in range(10) if k != a]
            per_anchor.append(-(float(clean[a] @ positive) / TAU - _logsumexp(denominator)))
        expected.append(np.mean(per_anchor))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_published_loss_scale_multiplies_every_term_by_tau_over_0_07():
    z1, z2, z_mix = _unit(6, 10), _unit(6, 11), _unit(6, 12)
    labels = torch.tensor([0, 1, 0, 1, 2, 2])
    plain = build_objective(merge(dict(protocol="cifar10", temperature=TAU)), None)
    scaled = build_objective(merge(dict(protocol="cifar10", temperature=TAU, loss_scale="tau/0.07")), None)
    a, b = plain.clean_terms(torch.cat([z1, z2]), labels), scaled.clean_terms(torch.cat([z1, z2]), labels)
    for key in ("loss", "supcon", "simclr"):
        assert b[key].item() == pytest.approx(TAU / 0.07 * a[key].item(), rel=1e-12)
    torch.testing.assert_close(scaled.mix_per_sample(z_mix, False), TAU / 0.07 * plain.mix_per_sample(z_mix, False))
