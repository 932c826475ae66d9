"""The GradMix augmentation: capture the CAM layers, sample boxes and partners, find where the model
looks, paste a resized partner image there (DESIGN.md section 2, steps 2-8).

The three heavy operations (layercam, window_argmax, paste_resized) come from ``ops``: the Triton
kernels for CUDA tensors, the batched PyTorch reference otherwise. Everything here is batched and
free of host synchronisation: random numbers are drawn on the tensors' device and no value is read
back, so on a GPU the whole augmentation is a fixed sequence of launches.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import nn

from fastgradmix.common.errors import UserError
from fastgradmix.gradmix import reference

MIX_VARIANTS = {"gradmix": "layercam", "gradcam-mix": "gradcam"}


def _triton_ops() -> SimpleNamespace | None:
    try:
        return SimpleNamespace(
            layercam=importlib.import_module("fastgradmix.kernels.layercam").layercam,
            window_argmax=importlib.import_module("fastgradmix.kernels.window_argmax").window_argmax,
            paste_resized=importlib.import_module("fastgradmix.kernels.paste").paste_resized,
        )
    except ImportError:
        return None


def resolve_ops(backend: str, device: torch.device) -> SimpleNamespace:
    """``auto``: Triton kernels for CUDA tensors when available, the PyTorch reference otherwise."""
    reference_ops = SimpleNamespace(layercam=reference.layercam, window_argmax=reference.window_argmax,
                                    paste_resized=reference.paste_resized)
    if backend == "reference":
        return reference_ops
    triton_ops = _triton_ops()
    if backend == "triton":
        if triton_ops is None:
            raise UserError("--gradmix-backend triton: the Triton kernels cannot be imported "
                            "(is triton installed? pip install triton)")
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise UserError(f"--gradmix-backend triton needs a CUDA device, not {device.type} "
                            "(or TRITON_INTERPRET=1 to run the kernels slowly in Triton's interpreter)")
        return triton_ops
    if backend != "auto":
        raise UserError(f"unknown GradMix backend {backend!r}: choose auto, triton or reference")
    return triton_ops if (device.type == "cuda" and triton_ops is not None) else reference_ops


class CamCapture:
    """Forward hooks keeping the outputs of the named CAM layers while armed.

    Arm it for the clean forward only; the mixed view's forward must not overwrite the captures.
    With ``keep_grads`` the captured activations also record their gradient during the next
    backward (the ``--cam-grad detached`` mode).
    """

    def __init__(self, model: nn.Module, layer_names: list[str], keep_grads: bool = False):
        self.layer_names = layer_names
        self.keep_grads = keep_grads
        self.armed = False
        self.activations: list[torch.Tensor] = []
        self.gradients: list[torch.Tensor | None] = []
        self._handles = []
        for index, name in enumerate(layer_names):
            module = model.cam_module(name)
            self._handles.append(module.register_forward_hook(self._make_hook(index)))

    def _make_hook(self, index: int):
        def hook(module, inputs, output):
            if not self.armed:
                return
            self.activations[index] = output
            if self.keep_grads and output.requires_grad:
                def keep(grad, index=index):
                    self.gradients[index] = grad
                output.register_hook(keep)
        return hook

    def arm(self) -> None:
        self.activations = [None] * len(self.layer_names)
        self.gradients = [None] * len(self.layer_names)
        self.armed = True

    def disarm(self) -> None:
        self.armed = False

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def sample_box_sides(n: int, height: int, width: int, gamma_min: float, gamma_max: float,
                     generator: torch.Generator, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """gamma_i ~ U(gamma_min, gamma_max) per sample; box sides max(1, round(gamma_i * side)), int64 (N,).

    One gamma per sample sets both sides, so boxes have the image's aspect ratio. Rounding is
    half-to-even (torch.round), as Python's round.
    """
    gamma = torch.rand(n, generator=generator, device=device) * (gamma_max - gamma_min) + gamma_min
    box_h = torch.round(gamma * height).clamp(1, height).to(torch.int64)
    box_w = torch.round(gamma * width).clamp(1, width).to(torch.int64)
    return box_h, box_w


def random_derangement(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """A random permutation p of 0..n-1 with p[i] != i for every i (n >= 2), without host syncs.

    Walks a random cyclic order: p[order[k]] = order[k + 1]. The result is a uniformly random single
    n-cycle, which is always a derangement and needs no rejection loop.
    """
    order = torch.randperm(n, generator=generator, device=device)
    partner = torch.empty_like(order)
    partner[order] = order.roll(-1)
    return partner


@dataclass
class MixedView:
    images: torch.Tensor  # (N, C, H, W) v1 with a resized partner pasted into each box
    weights: torch.Tensor  # (N,) fp32, box area / image area
    maps: torch.Tensor  # (N, H, W) fp32 CAM at input resolution
    top: torch.Tensor  # (N,) int64 box corners and sides
    left: torch.Tensor
    box_h: torch.Tensor
    box_w: torch.Tensor
    partner: torch.Tensor  # (N,) int64 index of the pasted image


def gradmix_view(images: torch.Tensor, activations: list[torch.Tensor], gradients: list[torch.Tensor],
                 variant: str, gamma_range: tuple[float, float], generator: torch.Generator,
                 ops: SimpleNamespace) -> MixedView:
    """Steps 3-8 of DESIGN.md: CAM maps, box sides, window search, derangement partner, paste, weights.

    images (N, C, H, W) is the first clean view; activations/gradients are the CAM layers' tensors for
    those N images (detached), each (N, C_l, h_l, w_l).
    """
    n, _, height, width = images.shape
    maps = ops.layercam(activations, gradients, out_size=(height, width), variant=variant)  # (N, H, W)
    box_h, box_w = sample_box_sides(n, height, width, *gamma_range, generator, images.device)
    top, left = ops.window_argmax(maps, box_h, box_w)
    partner = random_derangement(n, generator, images.device)
    mixed = ops.paste_resized(images, images[partner], top, left, box_h, box_w)
    weights = (box_h * box_w).float() / float(height * width)
    return MixedView(mixed, weights, maps, top, left, box_h, box_w, partner)
