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

__all__ = ["PAPER_RECIPE", "CamBoxes", "GradMixRecipe", "MixedView", "cam_boxes", "gradmix_view", "paste_boxes",
           "sample_box_sides"]


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
    maps: torch.Tensor | None  # (N, H, W) fp32 CAM at input resolution (None: pasted into boxes kept from before)
    top: torch.Tensor  # (N,) int64 box corners and sides
    left: torch.Tensor
    box_h: torch.Tensor
    box_w: torch.Tensor
    partner: torch.Tensor  # (N,) int64 index of the pasted image (-1: noise was pasted)


@dataclass
class CamBoxes:
    """Where each image's partner goes: steps 3-5 (CAM, box sides, position), before any paste."""

    top: torch.Tensor  # (N,) int64 box corners and sides (a side may be 0 under --box-position hottest)
    left: torch.Tensor
    box_h: torch.Tensor
    box_w: torch.Tensor
    weights: torch.Tensor  # (N,) fp32 the mix term's weight w_i (the recipe's rule)
    maps: torch.Tensor | None = None  # (N, H, W) fp32 the CAM the boxes came from (None: boxes kept from before)
    may_be_empty: bool = False  # some box may have a 0 side (hottest-pixel boxes, kept boxes of unseen images)


def gradmix_view(images: torch.Tensor, activations: list[torch.Tensor], gradients: list[torch.Tensor],
                 variant: str, gamma_range: tuple[float, float], generator: torch.Generator,
                 ops: SimpleNamespace, recipe: GradMixRecipe = PAPER_RECIPE) -> MixedView:
    """Steps 3-8 of DESIGN.md: CAM maps, box sides, window search, derangement partner, paste, weights.

    images (N, C, H, W) is the first clean view; activations/gradients are the CAM layers' tensors (detached),
    each (B, C_l, h_l, w_l) whose first N rows are those images' (B > N: the other view's rows, which only
    ``cam_norm="batch"`` reads). The draws from ``generator``, in this order: the box sizes, then the
    partners (``paste="partner"``) or the noise (``paste="noise"``, (N, 1, H, W) uniform).
    """
    boxes = cam_boxes(images, activations, gradients, variant, gamma_range, generator, ops, recipe)
    return paste_boxes(images, boxes, generator, ops, recipe)


def cam_boxes(images: torch.Tensor, activations: list[torch.Tensor], gradients: list[torch.Tensor],
              variant: str, gamma_range: tuple[float, float], generator: torch.Generator,
              ops: SimpleNamespace, recipe: GradMixRecipe = PAPER_RECIPE) -> CamBoxes:
    """Steps 3-5: the CAM at input resolution, the box sides (the generator's first draw), the box positions
    and the weights w_i; ``images`` only gives the shape and device. ``--cam-schedule epoch`` keeps these
    boxes for the image's next epoch (training/mixed_views/epoch_boxes.py)."""
    n, _, height, width = images.shape
    if recipe.cam_norm == "batch":
        maps = published.batch_normalised_cam(activations, gradients, (height, width), variant)[:n]  # (N, H, W)
    else:
        maps = ops.layercam([a[:n] for a in activations], [g[:n] for g in gradients], out_size=(height, width),
                            variant=variant)  # (N, H, W)
    if recipe.box_share == "per-image" and recipe.box_draw == "side":  # the paper's draw (the kernels' sizes)
        box_h, box_w = sample_box_sides(n, height, width, *gamma_range, generator, images.device)  # (N,) each
        cut_h, cut_w = box_h, box_w
    else:
        cut_h, cut_w = published.box_cuts(n, height, width, *gamma_range, recipe.box_share, recipe.box_draw,
                                          generator, images.device)  # (N,) each, the drawn sides
        box_h, box_w = cut_h.clamp(1, height), cut_w.clamp(1, width)  # the window search needs >= 1 pixel
    if recipe.box_position == "hottest":
        top, left, box_h, box_w = published.hottest_pixel_boxes(maps, cut_h, cut_w)
    else:
        top, left = ops.window_argmax(maps, box_h, box_w)  # (N,) each, int64
    if recipe.weight == "remaining":  # published: 1 - the drawn (unclipped) box area, whatever was pasted
        weights = 1 - (cut_h * cut_w).float() / float(height * width)
    else:  # the pasted box's area fraction
        weights = (box_h * box_w).float() / float(height * width)
    return CamBoxes(top, left, box_h, box_w, weights, maps, may_be_empty=recipe.box_position == "hottest")


def paste_boxes(images: torch.Tensor, boxes: CamBoxes, generator: torch.Generator, ops: SimpleNamespace,
                recipe: GradMixRecipe = PAPER_RECIPE) -> MixedView:
    """Steps 6-8: draws the partners (a derangement) or the noise from ``generator`` and pastes into each box
    of ``images`` (N, C, H, W). A box with a 0 side pastes nothing (mixed_i = images_i)."""
    n, _, height, width = images.shape
    top, left, box_h, box_w = boxes.top, boxes.left, boxes.box_h, boxes.box_w
    if recipe.paste == "noise":
        partner = torch.full((n,), -1, dtype=torch.int64, device=images.device)
        noise = torch.rand((n, 1, height, width), generator=generator, device=images.device)  # (N, 1, H, W)
        mixed = published.paste_noise(images, top, left, box_h, box_w, noise)
        return MixedView(mixed, boxes.weights, boxes.maps, top, left, box_h, box_w, partner)
    partner = random_derangement(n, generator, images.device)  # (N,)
    if boxes.may_be_empty:  # paste_resized needs a box of at least one pixel; an empty one pastes nothing
        empty = (box_h == 0) | (box_w == 0)  # (N,)
        pasted = ops.paste_resized(images, images[partner], top, left, box_h.clamp_min(1), box_w.clamp_min(1))
        mixed = torch.where(empty.view(n, 1, 1, 1), images, pasted)
    else:  # the window search's boxes always hold at least one pixel
        mixed = ops.paste_resized(images, images[partner], top, left, box_h, box_w)  # (N, C, H, W)
    return MixedView(mixed, boxes.weights, boxes.maps, top, left, box_h, box_w, partner)
