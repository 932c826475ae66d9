"""The --preset official GradMix step against a slow, literal re-statement of the published code's step.

The re-statement below follows gawainxu/GradMix line by line, in its own terms (a per-image Python loop, NumPy
argmax, the published ``SupConLoss`` with its two separately max-shifted logit matrices): the CAM pass of
``datautil.parallel_gradients`` + ``layer_salient_maps`` (SimCLR loss of both views, LayerCAM, one min-max
over the whole batch per layer), ``salient_cutmix`` + ``rand_bbox`` (one lam per batch, box centred on the
hottest pixel and clipped, noise paste, new_lam = 1 - box area) and the training step of
``main_supcon_old.py`` (loss = gama * L_sup + lam * (L_ssl + new_lam * L_ssl_mix), every SupConLoss scaled by
temperature / 0.07). The random numbers are the only thing taken from fastgradmix's documented draw order
(one U for the box size, then an (N, 1, H, W) noise field), since the published code draws from NumPy's
and torch's global generators. Boxes, mixed images, loss and every parameter gradient must agree.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from host_reads import ForbidHostReads

from fastgradmix.common.errors import UserError
from fastgradmix.gradmix.augment import gradmix_view
from fastgradmix.models import build_model
from fastgradmix.runs.config import merge, validate
from fastgradmix.training.step import TrainStep, build_optimizer

CPU = torch.device("cpu")
N, SIZE = 6, 16
LABELS = torch.tensor([0, 1, 0, 1, 2, 2])


class PublishedSupConLoss:
    """losses.py SupConLoss.forward, contrast_mode 'all', re-stated (features_positive included)."""

    def __init__(self, temperature: float, base_temperature: float = 0.07):
        self.temperature, self.base_temperature = temperature, base_temperature

    def __call__(self, features, labels=None, features_positive=None):
        batch_size = features.shape[0]
        if labels is None:
            mask = torch.eye(batch_size, dtype=torch.float32)
        else:
            labels = labels.contiguous().view(-1, 1)
            mask = torch.eq(labels, labels.T).float()
        contrast_count = features.shape[1]
        contrast_feature = torch.cat(torch.unbind(features, dim=1), dim=0)
        positive_feature = contrast_feature if features_positive is None else torch.cat(
            torch.unbind(features_positive, dim=1), dim=0)
        anchor_feature, anchor_count = contrast_feature, contrast_count
        dot_positive = torch.div(torch.matmul(anchor_feature, positive_feature.T), self.temperature)
        dot_negative = torch.div(torch.matmul(anchor_feature, contrast_feature.T), self.temperature)
        max_positive, _ = torch.max(dot_positive, dim=1, keepdim=True)
        logits_positive = dot_positive - max_positive.detach()
        max_negative, _ = torch.max(dot_negative, dim=1, keepdim=True)
        logits_negative = dot_negative - max_negative.detach()
        mask = mask.repeat(anchor_count, contrast_count)
        logits_mask = torch.scatter(torch.ones_like(mask), 1, torch.arange(batch_size * anchor_count).view(-1, 1), 0)
        mask = mask * logits_mask
        exp_logits_negative = torch.exp(logits_negative) * logits_mask
        log_prob = logits_positive - torch.log(exp_logits_negative.sum(1, keepdim=True))
        mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)
        loss = -(self.temperature / self.base_temperature) * mean_log_prob_pos
        # the detached offset (max_negative - max_positive) of each anchor, which fastgradmix leaves out
        offset = -(self.temperature / self.base_temperature) * (max_negative - max_positive).squeeze(1).detach()
        return loss.view(anchor_count, batch_size).mean(), offset.view(anchor_count, batch_size).mean()


def _pair(features: torch.Tensor) -> torch.Tensor:
    """(2N, D) [z1; z2] -> (N, 2, D), the published ``torch.cat([f1.unsqueeze(1), f2.unsqueeze(1)], dim=1)``."""
    f1, f2 = torch.split(features, [N, N], dim=0)
    return torch.cat([f1.unsqueeze(1), f2.unsqueeze(1)], dim=1)


def published_step(model, images1, images2, labels, layers, uniform, noise, temperature, gama, lam_method):
    """One published training step (main_supcon_old.py, SimCLR branch, layersaliencymix); returns the boxes,
    the mixed images, the loss, its detached offset, and leaves the gradients in the model's .grad."""
    bsz, h, w = images1.shape[0], images1.shape[2], images1.shape[3]
    # datautil.salient_cutmix: lam = Beta(1, 1) * (0.9 - 0.5) + 0.5, one per batch
    lam = torch.tensor(uniform.double().item() * (0.9 - 0.5) + 0.5, dtype=torch.float64)
    # parallel_gradients.forward: a separate forward of both views, SupConLoss(temperature=0.05) without labels
    captured = {}
    hooks = [model.cam_module(name).register_forward_hook(
        lambda module, inputs, output, name=name: captured.__setitem__(name, output)) for name in layers]
    features = model(torch.cat([images1, images2], dim=0))
    for hook in hooks:
        hook.remove()
    cam_loss, _ = PublishedSupConLoss(temperature)(_pair(features))
    gradients = torch.autograd.grad(cam_loss, [captured[name] for name in layers])
    # layer_salient_maps
    with torch.no_grad():
        cam = torch.zeros(1, bsz * 2, h, w)
        for activations, grads in zip([captured[name].detach() for name in layers], gradients, strict=True):
            cam_layer = torch.sum(activations * F.relu(grads), dim=1).unsqueeze(0)
            cam_min, cam_max = cam_layer.min(), cam_layer.max()
            norm_cam_layer = (cam_layer - cam_min).div(cam_max - cam_min + 1e-8)
            cam = cam + F.interpolate(norm_cam_layer, size=(h, w), mode="bilinear", align_corners=False)
        activations = torch.squeeze(cam)
    # the per-image loop of salient_cutmix with rand_bbox
    boxes, mixed1 = [], []
    for i in range(bsz):
        ratio = np.sqrt(1 - lam.numpy())
        cut_h, cut_w = int(h * ratio), int(w * ratio)
        activation = activations[i].numpy()
        down_ratio = int(h / activation.shape[0])
        cy, cx = (index * down_ratio for index in np.unravel_index(np.argmax(activation, axis=None), activation.shape))
        yl, yh = np.clip(cy - cut_h // 2, 0, h).item(), np.clip(cy + cut_h // 2, 0, h).item()
        xl, xh = np.clip(cx - cut_w // 2, 0, w).item(), np.clip(cx + cut_w // 2, 0, w).item()
        x11_new = torch.empty_like(images1[i]).copy_(images1[i])
        x11_new[:, yl:yh, xl:xh] = noise[i, 0, yl:yh, xl:xh]  # published: torch.rand(yh - yl, xh - xl)
        mixed1.append(x11_new)
        boxes.append((yl, xl, yh - yl, xh - xl))
        bbox_area = cut_h * cut_w
    new_lam = torch.tensor(1. - bbox_area / h / w)
    mixed1 = torch.stack(mixed1)
    # main_supcon_old.py train(), SimCLR branch
    criterion = PublishedSupConLoss(temperature)
    features = _pair(model(torch.cat([images1, images2], dim=0)))
    loss_sup, _ = criterion(features, labels)
    loss_ssl, _ = criterion(features)
    mixed_features = _pair(model(torch.cat([mixed1, images2.clone()], dim=0)))
    loss_ssl_mix, offset = criterion(features, features_positive=mixed_features)
    loss = gama * loss_sup + lam_method * (loss_ssl + new_lam * loss_ssl_mix)
    model.zero_grad(set_to_none=True)
    loss.backward()
    return boxes, mixed1, loss.detach(), (lam_method * new_lam * offset).detach()


def _official_config(**overrides):
    values = dict(preset="official", protocol="cifar10", arch="resnet18", width=4, image_size=SIZE, batch_size=N,
                  cam_layers="conv4_2+conv5_2", temperature=0.05, theta=0.7, lam=1.3)
    values.update(overrides)
    cfg = merge(values)
    validate(cfg)
    return cfg


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_official_step_equals_the_published_step(seed, monkeypatch):
    cfg = _official_config()
    assert (cfg.cam_loss, cfg.cam_norm, cfg.box_share, cfg.box_draw, cfg.box_position, cfg.paste, cfg.mix_anchors,
            cfg.mix_weight, cfg.loss_scale) == ("self-supervised", "batch", "per-batch", "area", "hottest", "noise",
                                                "clean", "remaining", "tau/0.07")
    torch.manual_seed(seed)
    model = build_model("resnet18", 3, width=4)
    reference_model = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(100 + seed)
    images1, images2 = torch.randn(2, N, 3, SIZE, SIZE, generator=generator)

    seen = {}

    def record(*args, **kwargs):
        seen["view"] = gradmix_view(*args, **kwargs)
        return seen["view"]

    monkeypatch.setattr("fastgradmix.gradmix.mixer.gradmix_view", record)
    step = TrainStep(model, build_optimizer(model, 1e-3, 0.0), cfg, CPU)
    losses = step(images1, images2, LABELS, torch.Generator().manual_seed(seed))

    draws = torch.Generator().manual_seed(seed)  # the documented draw order: the box size, then the noise
    uniform = torch.rand(1, generator=draws)
    noise = torch.rand((N, 1, SIZE, SIZE), generator=draws)
    boxes, mixed, loss, offset = published_step(reference_model, images1, images2, LABELS, cfg.cam_layer_list(),
                                                uniform, noise, cfg.temperature, cfg.theta, cfg.lam)

    view = seen["view"]
    ours = list(zip(*(t.tolist() for t in (view.top, view.left, view.box_h, view.box_w)), strict=True))
    assert ours == boxes
    assert any(b[2] > 0 for b in boxes)
    torch.testing.assert_close(view.images, mixed, rtol=0, atol=0)
    # the published value = fastgradmix's + a detached offset that no gradient sees
    torch.testing.assert_close(losses["loss"], loss - offset, rtol=1e-5, atol=1e-5)
    for (name, ours_p), theirs in zip(model.named_parameters(), reference_model.parameters(), strict=True):
        # fp32 sums in another order: agreement to 1e-5 of the tensor's largest gradient
        scale = float(theirs.grad.abs().max())
        torch.testing.assert_close(ours_p.grad, theirs.grad, rtol=0, atol=1e-5 * scale + 1e-8, msg=name)


def test_official_step_reads_nothing_back_to_the_host():
    cfg = _official_config()
    torch.manual_seed(0)
    model = build_model("resnet18", 3, width=4)
    step = TrainStep(model, build_optimizer(model, 1e-3, 0.0), cfg, CPU)
    images1, images2 = torch.randn(2, N, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    with ForbidHostReads():
        losses = step(images1, images2, LABELS, torch.Generator().manual_seed(1))
    assert torch.isfinite(losses["loss"])


@pytest.mark.parametrize("variant", ["--cam-norm", "--box-position", "--paste"])
def test_triton_backend_with_a_variant_without_kernel_is_one_line_error(variant):
    values = {"--cam-norm": dict(cam_norm="batch"), "--box-position": dict(box_position="hottest"),
              "--paste": dict(paste="noise")}[variant]
    cfg = merge(dict(protocol="cifar10", gradmix_backend="triton", **values))
    with pytest.raises(UserError, match=f"no Triton kernel for {variant}"):
        validate(cfg)
    validate(merge(dict(protocol="cifar10", gradmix_backend="reference", **values)))
