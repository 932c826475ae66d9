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
from fastgradmix.gradmix import published

__all__ = ["PAPER_RECIPE", "GradMixRecipe", "MixedView", "gradmix_view", "sample_box_sides"]


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


@dataclass(frozen=True)
class GradMixRecipe:
    """Which form of each step (the defaults are the paper's, DESIGN.md section 2; the alternatives the
    published code's, published.py): ``cam_norm`` image | batch, ``box_share`` per-image | per-batch,
    ``box_draw`` side | area, ``box_position`` window | hottest, ``paste`` partner | noise, ``weight`` area
    (w_i = pasted box area / image area) | remaining (w_i = 1 - drawn box area / image area)."""

    cam_norm: str = "image"
    box_share: str = "per-image"
    box_draw: str = "side"
    box_position: str = "window"
    paste: str = "partner"
    weight: str = "area"

    @classmethod
    def from_config(cls, cfg) -> GradMixRecipe:
        return cls(cfg.cam_norm, cfg.box_share, cfg.box_draw, cfg.box_position, cfg.paste, cfg.mix_weight)


PAPER_RECIPE = GradMixRecipe()


@dataclass
class MixedView:
    images: torch.Tensor  # (N, C, H, W) v1 with a resized partner pasted into each box
    weights: torch.Tensor  # (N,) fp32, box area / image area
    maps: torch.Tensor  # (N, H, W) fp32 CAM at input resolution
    top: torch.Tensor  # (N,) int64 box corners and sides
    left: torch.Tensor
    box_h: torch.Tensor
    box_w: torch.Tensor
    partner: torch.Tensor  # (N,) int64 index of the pasted image (-1: noise was pasted)


def gradmix_view(images: torch.Tensor, activations: list[torch.Tensor], gradients: list[torch.Tensor],
                 variant: str, gamma_range: tuple[float, float], generator: torch.Generator,
                 ops: SimpleNamespace, recipe: GradMixRecipe = PAPER_RECIPE) -> MixedView:
    """Steps 3-8 of DESIGN.md: CAM maps, box sides, window search, derangement partner, paste, weights.

    images (N, C, H, W) is the first clean view; activations/gradients are the CAM layers' tensors (detached),
    each (B, C_l, h_l, w_l) whose first N rows are those images' (B > N: the other view's rows, which only
    ``cam_norm="batch"`` reads). The draws from ``generator``, in this order: the box sizes, then the
    partners (``paste="partner"``) or the noise (``paste="noise"``, (N, 1, H, W) uniform).
    """
    n, _, height, width = images.shape
    if recipe == PAPER_RECIPE:  # the paper's form: the kernels (or their reference) for every operation
        maps = ops.layercam([a[:n] for a in activations], [g[:n] for g in gradients], out_size=(height, width),
                            variant=variant)  # (N, H, W)
        box_h, box_w = sample_box_sides(n, height, width, *gamma_range, generator, images.device)  # (N,) each
        top, left = ops.window_argmax(maps, box_h, box_w)  # (N,) each, int64
        partner = random_derangement(n, generator, images.device)  # (N,)
        mixed = ops.paste_resized(images, images[partner], top, left, box_h, box_w)  # (N, C, H, W)
        weights = (box_h * box_w).float() / float(height * width)  # (N,)
        return MixedView(mixed, weights, maps, top, left, box_h, box_w, partner)
    return _recipe_view(images, activations, gradients, variant, gamma_range, generator, ops, recipe)


def _recipe_view(images: torch.Tensor, activations: list[torch.Tensor], gradients: list[torch.Tensor],
                 variant: str, gamma_range: tuple[float, float], generator: torch.Generator,
                 ops: SimpleNamespace, recipe: GradMixRecipe) -> MixedView:
    """``gradmix_view`` with one or more of the published code's variants (published.py); the steps that
    keep the paper's form still use ``ops`` (kernels on CUDA)."""
    n, _, height, width = images.shape
    if recipe.cam_norm == "batch":
        maps = published.batch_normalised_cam(activations, gradients, (height, width), variant)[:n]  # (N, H, W)
    else:
        maps = ops.layercam([a[:n] for a in activations], [g[:n] for g in gradients], out_size=(height, width),
                            variant=variant)
    cut_h, cut_w = published.box_cuts(n, height, width, *gamma_range, recipe.box_share, recipe.box_draw,
                                      generator, images.device)  # (N,) each, the drawn sides
    if recipe.box_position == "hottest":
        top, left, box_h, box_w = published.hottest_pixel_boxes(maps, cut_h, cut_w)
    else:  # the window search needs a box of at least one pixel that fits
        box_h, box_w = cut_h.clamp(1, height), cut_w.clamp(1, width)
        top, left = ops.window_argmax(maps, box_h, box_w)
    if recipe.paste == "noise":
        partner = torch.full((n,), -1, dtype=torch.int64, device=images.device)
        noise = torch.rand((n, 1, height, width), generator=generator, device=images.device)  # (N, 1, H, W)
        mixed = published.paste_noise(images, top, left, box_h, box_w, noise)
    else:
        partner = random_derangement(n, generator, images.device)  # (N,)
        # paste_resized needs a box of at least one pixel; an empty box (a 0 side) pastes nothing
        empty = (box_h == 0) | (box_w == 0)
        pasted = ops.paste_resized(images, images[partner], top, left, box_h.clamp_min(1), box_w.clamp_min(1))
        mixed = torch.where(empty.view(n, 1, 1, 1), images, pasted)
    if recipe.weight == "remaining":  # published: 1 - the drawn (unclipped) box area, whatever was pasted
        weights = 1 - (cut_h * cut_w).float() / float(height * width)
    else:
        weights = (box_h * box_w).float() / float(height * width)
    return MixedView(mixed, weights, maps, top, left, box_h, box_w, partner)
