"""The GradMix step against an independent, written-out version of DESIGN.md section 2."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from host_reads import ForbidHostReads

from fastgradmix.common.sampling import random_derangement
from fastgradmix.gradmix.augment import gradmix_view, sample_box_sides
from fastgradmix.gradmix.ops import resolve_ops
from fastgradmix.models import build_model
from fastgradmix.runs.config import Config
from fastgradmix.training.step import TrainStep


@pytest.mark.parametrize("n", [2, 3, 5, 64, 257])
def test_derangement_is_a_permutation_without_fixed_points(n):
    generator = torch.Generator().manual_seed(n)
    for _ in range(20):
        partner = random_derangement(n, generator, torch.device("cpu"))
        assert sorted(partner.tolist()) == list(range(n))
        assert not (partner == torch.arange(n)).any()


@pytest.mark.parametrize("height,width", [(16, 16), (32, 32), (13, 7), (5, 5)])
def test_box_sides_follow_gamma(height, width):
    generator = torch.Generator().manual_seed(0)
    box_h, box_w = sample_box_sides(4096, height, width, 0.1, 0.5, generator, torch.device("cpu"))
    assert box_h.dtype == torch.int64
    assert box_h.min() >= max(1, round(0.1 * height)) and box_h.max() <= round(0.5 * height)
    assert box_w.min() >= max(1, round(0.1 * width)) and box_w.max() <= round(0.5 * width)
    assert ((1 <= box_h) & (box_h <= height) & (1 <= box_w) & (box_w <= width)).all()


def _config(**overrides) -> Config:
    values = dict(arch="resnet18", width=8, image_size=16, cam_layers="conv4_2", temperature=0.5,
                  theta=1.0, lam=1.2, gradmix_backend="reference")
    values.update(overrides)
    return Config(**values)


def _written_out_clean_loss(z1, z2, labels, tau, theta, lam):
    """DESIGN.md's L_con = theta L_supcon + lambda L_simclr, with the log-softmax over all k != i."""
    n = z1.shape[0]
    z = torch.cat([z1, z2])  # (2N, D)
    sim = z @ z.T / tau
    not_self = ~torch.eye(2 * n, dtype=torch.bool)
    log_prob = sim - torch.logsumexp(sim.masked_fill(~not_self, -torch.inf), dim=1, keepdim=True)
    image_id = torch.arange(n).repeat(2)
    class_id = labels.repeat(2)

    def mean_over_positives(same):
        positives = same & not_self
        return -(log_prob * positives).sum(1) / positives.sum(1)

    simclr = mean_over_positives(image_id[:, None] == image_id[None]).mean()
    supcon = mean_over_positives(class_id[:, None] == class_id[None]).mean()
    return theta * supcon + lam * simclr


def _written_out_mix_loss(z1, z2, z_mix, weights, tau):
    """mean_i w_i l_mix(i): anchor z_mix_i, positive z2_i, negatives z1_j and z2_j for j != i."""
    n = z1.shape[0]
    terms = []
    for i in range(n):
        others = [j for j in range(n) if j != i]
        candidates = torch.cat([z2[i:i + 1], z1[others], z2[others]])
        logits = candidates @ z_mix[i] / tau
        terms.append(-(logits[0] - torch.logsumexp(logits, 0)))
    return (weights * torch.stack(terms)).mean()


def _slow_cam_boxes(maps, box_h, box_w):
    """Per sample, every position: the box with the largest sum, first in (y, x) order on ties."""
    tops, lefts = [], []
    for m, h, w in zip(maps.double().numpy(), box_h.tolist(), box_w.tolist(), strict=False):
        best, where = -np.inf, None
        for y in range(m.shape[0] - h + 1):
            for x in range(m.shape[1] - w + 1):
                total = m[y:y + h, x:x + w].sum()
                if total > best + 1e-9:
                    best, where = total, (y, x)
        tops.append(where[0])
        lefts.append(where[1])
    return tops, lefts


@pytest.mark.parametrize("channels_last", [False, True])
def test_gradmix_step_matches_written_out_objective(channels_last, monkeypatch):
    torch.manual_seed(0)
    cfg = _config(channels_last=channels_last)
    model = build_model("resnet18", 3, width=8, channels_last=channels_last)
    reference_model = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # keeps the weights, leaves .grad readable
    step = TrainStep(model, optimizer, cfg, torch.device("cpu"))
    recorded = {}

    def recording_view(*args, **kwargs):  # keeps the boxes and partners the step drew
        recorded["mixed"] = gradmix_view(*args, **kwargs)
        return recorded["mixed"]

    monkeypatch.setattr("fastgradmix.gradmix.mixer.gradmix_view", recording_view)
    n = 6
    view1, view2 = torch.randn(n, 3, 16, 16), torch.randn(n, 3, 16, 16)
    labels = torch.tensor([0, 1, 0, 2, 1, 2])
    step(view1, view2, labels, torch.Generator().manual_seed(3))
    mixed = recorded["mixed"]

    # weights are the patched area ratio; pixels outside each box are untouched; partner != self
    assert torch.allclose(mixed.weights, (mixed.box_h * mixed.box_w).float() / 256)
    assert not (mixed.partner == torch.arange(n)).any()
    for i in range(n):
        inside = torch.zeros(16, 16, dtype=torch.bool)
        y, x, h, w = mixed.top[i], mixed.left[i], mixed.box_h[i], mixed.box_w[i]
        inside[y:y + h, x:x + w] = True
        assert torch.equal(mixed.images[i][:, ~inside], view1[i][:, ~inside])
        pasted = F.interpolate(view1[mixed.partner[i]][None], size=(int(h), int(w)), mode="bilinear",
                               align_corners=False)[0]
        assert torch.allclose(mixed.images[i][:, inside].reshape(3, int(h), int(w)), pasted, atol=1e-5)

    # the CAM: gradients of L_con w.r.t. the conv4_2 output of the first view, written out here
    acts = {}
    hook = reference_model.cam_module("conv4_2").register_forward_hook(lambda m, i, o: acts.update(a=o))
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    z = reference_model(torch.cat([view1, view2]).contiguous(memory_format=memory_format))
    hook.remove()
    z1, z2 = z[:n], z[n:]
    clean = _written_out_clean_loss(z1, z2, labels, tau=0.5, theta=1.0, lam=1.2)
    grad = torch.autograd.grad(clean, acts["a"], retain_graph=True)[0][:n]
    cam = F.relu((F.relu(grad) * acts["a"][:n]).sum(1))
    cam = cam / (cam.flatten(1).max(1).values.view(n, 1, 1) + 1e-7)
    cam = F.interpolate(cam[:, None], size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(cam, mixed.maps, atol=1e-4)
    tops, lefts = _slow_cam_boxes(mixed.maps, mixed.box_h, mixed.box_w)
    assert mixed.top.tolist() == tops and mixed.left.tolist() == lefts

    # the parameter gradients of the whole step equal those of the objective written out above
    z_mix = reference_model(mixed.images.contiguous(memory_format=memory_format))
    total = clean + 1.2 * _written_out_mix_loss(z1, z2, z_mix, mixed.weights, tau=0.5)
    total.backward()
    for (name, p_step), p_ref in zip(model.named_parameters(), reference_model.parameters(), strict=False):
        assert torch.allclose(p_step.grad, p_ref.grad, atol=1e-5, rtol=1e-4), name


def test_detached_mode_trains_and_plain_mode_has_no_mix():
    torch.manual_seed(0)
    view1, view2 = torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)
    labels = torch.tensor([0, 1, 0, 1])
    for aug, cam_grad in [("gradmix", "detached"), ("gradcam-mix", "exact"), ("none", "exact")]:
        model = build_model("resnet18", 3, width=8)
        cfg = _config(aug=aug, cam_grad=cam_grad)
        step = TrainStep(model, torch.optim.Adam(model.parameters(), 1e-3), cfg, torch.device("cpu"))
        losses = step(view1, view2, labels, torch.Generator().manual_seed(0))
        assert torch.isfinite(losses["loss"])
        assert (float(losses["mix"]) == 0.0) == (aug == "none")


def test_auto_backend_uses_reference_on_cpu():
    ops = resolve_ops("auto", torch.device("cpu"))
    from fastgradmix.gradmix import reference
    assert ops.layercam is reference.layercam and ops.paste_resized is reference.paste_resized
    assert isinstance(ops, SimpleNamespace)


@pytest.mark.parametrize("aug,cam_grad", [("gradmix", "exact"), ("gradmix", "detached"), ("gradcam-mix", "exact")])
def test_training_step_reads_nothing_back_to_the_host(aug, cam_grad, monkeypatch):
    """Forward, loss, CAM gradient, augmentation and backward under a guard that fails on any host read
    (.item(), bool(), boolean masks, nonzero...). The optimizer update itself is left out: CPU Adam reads
    its step counter, CUDA's fused Adam does not."""
    torch.manual_seed(0)
    model = build_model("resnet18", 3, width=8)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    step = TrainStep(model, optimizer, _config(aug=aug, cam_grad=cam_grad), torch.device("cpu"))
    monkeypatch.setattr(step.scaler, "step", lambda opt: None)
    monkeypatch.setattr(step.scaler, "update", lambda: None)
    view1, view2 = torch.randn(5, 3, 16, 16), torch.randn(5, 3, 16, 16)
    with ForbidHostReads():
        losses = step(view1, view2, torch.tensor([0, 1, 0, 2, 1]), torch.Generator().manual_seed(0))
    assert torch.isfinite(losses["loss"]) and all(p.grad is not None for p in model.parameters())
