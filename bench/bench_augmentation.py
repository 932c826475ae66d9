"""The GradMix augmentation as a whole, against the route a user would otherwise take.

- ``peer_gradcam_loop`` (baseline): grad-cam's ``LayerCAM`` (its own extra forward and full backward,
  maps copied to the host and resized there with cv2), then per sample a host window search (integral
  image) and a paste loop on the device (F.interpolate + slice assignment).
- ``ours`` (candidate): ``gradmix_view`` from the activations and gradients the training step has already
  captured (CAM -> box sides -> window search -> partner -> paste): the kernels on a GPU, the batched
  reference on CPU. This is the augmentation's own cost inside our step.
- ``ours_with_dL_dA`` (candidate): the same plus ``torch.autograd.grad`` of the clean loss down to the CAM
  layer (the extra work of --cam-grad exact), so nothing the peer computes is left out.
- ``train_step`` (context): one whole GradMix training step (forward of both views, CAM gradient,
  augmentation, mixed forward, backward, Adam), to state the augmentation's share of a step.

All on the same model, batch and CAM layer (conv5_2 of ResNet-18, the default), in training mode.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from benchlib import DEVICE, ON_GPU, host_window_argmax, record, timed

from fastgradmix.gradmix.augment import gradmix_view
from fastgradmix.gradmix.capture import CamCapture
from fastgradmix.gradmix.ops import resolve_ops
from fastgradmix.models import build_model
from fastgradmix.runs.config import Config
from fastgradmix.training.objectives.losses import gradmix_objective
from fastgradmix.training.step import TrainStep

pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam import LayerCAM  # noqa: E402

# (batch, ResNet-18 width, image side)
SETTING = (256, 64, 32) if ON_GPU else (32, 16, 32)
CAM_LAYER = "conv5_2"
GAMMA = (0.1, 0.5)
ROUNDS = 20 if ON_GPU else 5


class _SimilarityToPositive:
    """grad-cam target for a contrastive encoder: the feature's similarity to the sample's other view."""

    def __init__(self, positive: torch.Tensor):
        self.positive = positive

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return (output * self.positive).sum()


@pytest.fixture(scope="module")
def scene():
    torch.manual_seed(0)
    batch, width, size = SETTING
    model = build_model("resnet18", 3, width=width).to(DEVICE).train()
    view1 = torch.randn(batch, 3, size, size, device=DEVICE)
    view2 = torch.randn(batch, 3, size, size, device=DEVICE)
    labels = torch.randint(0, 6, (batch,), device=DEVICE)

    # the step's clean forward with the CAM layer captured, and dL/dA (retain_graph: grad can run again)
    capture = CamCapture(model, [CAM_LAYER])
    capture.arm()
    features = model(torch.cat([view1, view2]))
    capture.disarm()
    loss = gradmix_objective(features[:batch], features[batch:], labels, theta=1.0, lam=1.2,
                             temperature=0.05, negatives_only=False)["loss"]
    grads = torch.autograd.grad(loss, capture.activations, retain_graph=True)
    return {
        "model": model, "view1": view1, "view2": view2, "labels": labels, "loss": loss,
        "activations": capture.activations,
        "acts": [a[:batch].detach() for a in capture.activations],
        "grads": [g[:batch].detach() for g in grads],
        "positives": features[batch:].detach(),
    }


def _group():
    batch, width, size = SETTING
    return f"augmentation b{batch} resnet18-w{width} {size}px"


def _run(benchmark, role, impl, fn):
    batch, width, size = SETTING
    benchmark.group = _group()
    repeat = 1
    record(benchmark, role, impl, repeat, op="augmentation", batch=batch, size=size, width=width,
           cam_layer=CAM_LAYER)
    fn()  # warm-up: kernel compilation, allocator, cudnn autotuning
    benchmark.pedantic(timed(fn, repeat), rounds=ROUNDS, warmup_rounds=1, iterations=1)


def test_peer_gradcam_loop(benchmark, scene):
    batch, _, size = SETTING
    model = copy.deepcopy(scene["model"])  # grad-cam keeps hooks on its model; keep ours clean
    cam = LayerCAM(model=model, target_layers=[model.cam_module(CAM_LAYER)])
    model.train()  # grad-cam switches to eval; a training loop would not
    targets = [_SimilarityToPositive(p) for p in scene["positives"]]
    rng = np.random.default_rng(0)
    gamma = rng.uniform(*GAMMA, batch)
    sides = np.clip(np.round(gamma * size), 1, size).astype(int)
    order = rng.permutation(batch)
    partners = np.empty(batch, dtype=int)
    partners[order] = np.roll(order, -1)  # a derangement, as ours draws
    view1 = scene["view1"]

    def augment():
        maps = cam(input_tensor=view1, targets=targets)  # (N, H, W) numpy, on the host
        mixed = view1.clone()
        for i in range(batch):
            side = int(sides[i])
            top, left = host_window_argmax(maps[i], side, side)
            patch = F.interpolate(view1[partners[i]][None], size=(side, side), mode="bilinear", align_corners=False)
            mixed[i, :, top:top + side, left:left + side] = patch[0]
        return mixed

    _run(benchmark, "baseline", "peer_gradcam_loop", augment)


def test_ours(benchmark, scene):
    ops = resolve_ops("auto", DEVICE)
    generator = torch.Generator(device=DEVICE).manual_seed(0)
    _run(benchmark, "candidate", "ours", lambda: gradmix_view(scene["view1"], scene["acts"], scene["grads"],
                                                               "layercam", GAMMA, generator, ops))


def test_ours_with_dL_dA(benchmark, scene):
    ops = resolve_ops("auto", DEVICE)
    generator = torch.Generator(device=DEVICE).manual_seed(0)
    batch = SETTING[0]

    def augment():
        grads = torch.autograd.grad(scene["loss"], scene["activations"], retain_graph=True)
        return gradmix_view(scene["view1"], scene["acts"], [g[:batch] for g in grads], "layercam", GAMMA,
                            generator, ops)

    _run(benchmark, "candidate", "ours_with_dL_dA", augment)


def test_train_step(benchmark, scene):
    batch, width, size = SETTING
    model = copy.deepcopy(scene["model"])
    cfg = Config(arch="resnet18", width=width, image_size=size, cam_layers=CAM_LAYER, aug="gradmix",
                 cam_grad="exact", gradmix_backend="auto", temperature=0.05)
    step = TrainStep(model, torch.optim.Adam(model.parameters(), 1e-4), cfg, DEVICE)
    generator = torch.Generator(device=DEVICE).manual_seed(0)
    _run(benchmark, "context", "train_step", lambda: step(scene["view1"], scene["view2"], scene["labels"], generator))

