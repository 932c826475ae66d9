"""The GradMix mixed view: from the CAM layers' activations and gradients to the pasted images and their
weights (DESIGN.md section 2, steps 3-8).

``gradmix_view`` turns the CAM into a map at input resolution, samples a box size per image, finds the box
position where the map is highest, draws a partner for each image and pastes the partner, resized, into
the box; the weight of image i's mix term is the box's area fraction. The capture of the CAM layers is
capture.py; the three heavy operations (layercam, window_argmax, paste_resized) come from ``ops``
(ops.py: the Triton kernels for CUDA tensors, the batched PyTorch reference otherwise). Everything here is
batched and free of host synchronisation: random numbers are drawn on the tensors' device and no value is
read back, so on a GPU the whole augmentation is a fixed sequence of launches.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch

from fastgradmix.common.sampling import random_derangement

__all__ = ["MixedView", "gradmix_view", "sample_box_sides"]


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
    box_h, box_w = sample_box_sides(n, height, width, *gamma_range, generator, images.device)  # (N,) each
    top, left = ops.window_argmax(maps, box_h, box_w)  # (N,) each, int64
    partner = random_derangement(n, generator, images.device)  # (N,)
    mixed = ops.paste_resized(images, images[partner], top, left, box_h, box_w)  # (N, C, H, W)
    weights = (box_h * box_w).float() / float(height * width)  # (N,)
    return MixedView(mixed, weights, maps, top, left, box_h, box_w, partner)
