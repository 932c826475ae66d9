"""The published GradMix code's variants of the augmentation, batched: the options that restore them.

gawainxu/GradMix makes its mixed view in ``datautil.layer_salient_maps`` (the CAM), ``datautil.salient_cutmix``
and ``datautil.rand_bbox`` (box and paste), a Python loop per image on the CPU. These are the same rules
for a whole batch on any device, with no host synchronisation:

- ``batch_normalised_cam`` (``--cam-norm batch``): per layer the LayerCAM sum_c A_c ReLU(G_c) of every
  image of the batch, min-max normalised with ONE minimum and maximum over the whole batch (all images,
  both views: the published forward holds [v1; v2]) and eps 1e-8, then resized bilinearly to the input
  and summed over layers (the published code normalises before resizing, as here);
- ``box_cuts`` (``--box-share``, ``--box-draw``): the box sides, per image or one per batch, from a side
  fraction gamma (the paper) or an area fraction (published: lam0 = 0.5 + 0.4 U, side int(H sqrt(1 - lam0)));
- ``hottest_pixel_boxes`` (``--box-position hottest``): the box centred on the first hottest pixel of the
  map (row-major, as ``np.argmax``), rows [cy - cut_h // 2, cy + cut_h // 2) clipped to the image (so the
  box has an even side before clipping and shrinks at the border instead of moving);
- ``paste_noise`` (``--paste noise``): the box filled with uniform noise in [0, 1), one value per pixel for
  all channels (``x[:, box] = torch.rand(h, w)``), written straight into the normalised image.

None of these has a Triton kernel: they run in PyTorch on every device (docs/FIDELITY.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["batch_normalised_cam", "box_cuts", "hottest_pixel_boxes", "paste_noise"]

PUBLISHED_EPS = 1e-8  # layer_salient_maps: (cam - min) / (max - min + 1e-8)


@torch.no_grad()
def batch_normalised_cam(acts: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], out_size: tuple[int, int],
                         variant: str = "layercam", eps: float = PUBLISHED_EPS) -> torch.Tensor:
    """Per layer (B, C_l, h_l, w_l) activations and gradients -> (B, H, W) fp32 maps, normalised batch-wide.

    ``variant`` "layercam": sum_c A_c ReLU(G_c) (no ReLU after the sum, as the published code: with ReLU'd
    block outputs it is non-negative anyway); "gradcam": ReLU(sum_c mean_hw(G_c) A_c).
    """
    total = None  # (B, H, W) fp32
    for a, g in zip(acts, grads, strict=True):  # a loop over layers, never over images
        a, g = a.float(), g.float()  # (B, C, h, w)
        if variant == "layercam":
            cam = (a * g.clamp_min(0)).sum(dim=1)  # (B, h, w)
        else:
            cam = (a * g.mean(dim=(2, 3), keepdim=True)).sum(dim=1).clamp_min(0)
        low, high = cam.amin(), cam.amax()  # () each: one pair for the whole batch
        cam = (cam - low) / (high - low + eps)
        cam = F.interpolate(cam.unsqueeze(1), size=out_size, mode="bilinear", align_corners=False).squeeze(1)
        total = cam if total is None else total + cam
    return total.contiguous()


def box_cuts(n: int, height: int, width: int, gamma_min: float, gamma_max: float, share: str, draw: str,
             generator: torch.Generator, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The drawn box sides (cut_h, cut_w), int64 (N,) each, before any placement or clipping.

    ``share``: "per-image" draws U ~ U(0, 1) for every image, "per-batch" once for the batch. ``draw``:
    "side": gamma = gamma_min + (gamma_max - gamma_min) U is the side fraction, sides max(1, round(gamma H))
    (half to even; the paper, fastgradmix's default); "area": lam0 = (1 - gamma_max) + (gamma_max - gamma_min) U
    is the share the image keeps, sides int(H sqrt(1 - lam0)) in float64 (published: with gamma 0.1..0.5,
    lam0 = 0.5 + 0.4 U, ``rand_bbox``'s truncation; a side can be 0: no box).
    """
    draws = n if share == "per-image" else 1
    if share not in ("per-image", "per-batch") or draw not in ("side", "area"):
        raise ValueError(f"box_cuts: share must be per-image or per-batch, draw side or area (got {share}, {draw})")
    uniform = torch.rand(draws, generator=generator, device=device).expand(n)  # (N,)
    if draw == "side":
        gamma = uniform * (gamma_max - gamma_min) + gamma_min  # fp32, as sample_box_sides
        cut_h = torch.round(gamma * height).clamp(1, height).to(torch.int64)
        cut_w = torch.round(gamma * width).clamp(1, width).to(torch.int64)
        return cut_h, cut_w
    keep = (1 - gamma_max) + (gamma_max - gamma_min) * uniform.double()  # (N,) lam0, float64 like numpy
    ratio = (1 - keep).sqrt()
    return (height * ratio).floor().to(torch.int64), (width * ratio).floor().to(torch.int64)


@torch.no_grad()
def hottest_pixel_boxes(maps: torch.Tensor, cut_h: torch.Tensor, cut_w: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Boxes centred on each map's hottest pixel: ``(top, left, box_h, box_w)`` int64 (N,), clipped.

    maps (N, H, W); cut sides (N,). The first maximal pixel in row-major order is the centre (cy, cx);
    rows run from clip(cy - cut_h // 2) to clip(cy + cut_h // 2), columns likewise, clip to [0, H] / [0, W].
    """
    n, height, width = maps.shape
    hottest = maps.reshape(n, height * width).argmax(dim=1)  # (N,): the first maximum, as np.argmax
    cy, cx = hottest // width, hottest % width
    half_h, half_w = cut_h.to(maps.device) // 2, cut_w.to(maps.device) // 2
    top, bottom = (cy - half_h).clamp(0, height), (cy + half_h).clamp(0, height)
    left, right = (cx - half_w).clamp(0, width), (cx + half_w).clamp(0, width)
    return top, left, bottom - top, right - left


@torch.no_grad()
def paste_noise(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, box_h: torch.Tensor,
                box_w: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``images`` (N, C, H, W) with box i replaced by ``noise`` (N, 1, H, W) (the same value in every channel);
    a new tensor of the images' dtype and memory format. Empty boxes (a side 0) leave the image as it is."""
    n, _, height, width = images.shape
    rows = torch.arange(height, device=images.device).view(1, height)  # (1, H)
    cols = torch.arange(width, device=images.device).view(1, width)
    in_rows = (rows >= top.view(n, 1)) & (rows < (top + box_h).view(n, 1))  # (N, H)
    in_cols = (cols >= left.view(n, 1)) & (cols < (left + box_w).view(n, 1))  # (N, W)
    in_box = in_rows.view(n, 1, height, 1) & in_cols.view(n, 1, 1, width)  # (N, 1, H, W)
    mixed = torch.empty_like(images)  # keeps the input's strides; where() writes every element
    torch.where(in_box, noise.to(images.dtype), images, out=mixed)
    return mixed
