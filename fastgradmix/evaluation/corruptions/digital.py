"""Digital corruptions: brightness, contrast, elastic transform, pixelate, JPEG compression."""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F

from fastgradmix.evaluation.corruptions.filters import box_resize_matrix, gaussian_filter
from fastgradmix.evaluation.corruptions.tables import Elastic


def brightness(images: torch.Tensor, shift: float, generator: torch.Generator) -> torch.Tensor:
    """Adds ``shift`` to the HSV value channel (clipped at 1), keeping hue and saturation.

    With hue and saturation fixed, RGB is proportional to the value V = max over channels, so the
    new pixel is x * V' / V; black pixels (V = 0, saturation 0) become grey V'. This equals the
    benchmark's RGB -> HSV -> RGB round trip (scikit-image) without the conversions, and works for
    single-channel images, where it adds ``shift``.
    """
    value = images.amax(dim=1, keepdim=True)  # (N, 1, H, W)
    new_value = (value + shift).clamp(0, 1)
    scaled = images * (new_value / value.clamp_min(1e-12))
    return torch.where(value > 0, scaled, new_value.expand_as(images))


def contrast(images: torch.Tensor, factor: float, generator: torch.Generator) -> torch.Tensor:
    """(x - mean) * factor + mean, with the mean per image and channel."""
    mean = images.mean(dim=(2, 3), keepdim=True)
    return (images - mean) * factor + mean


def affine_control_points(height: int, width: int) -> torch.Tensor:
    """The benchmark's three affine control points (x, y), (3, 2) float64.

    (cx + s, cy + s), (cx + s, cy - s), (cx - s, cy - s) with (cx, cy) = (W // 2, H // 2) and
    s = min(H, W) // 3.
    """
    cx, cy, s = width // 2, height // 2, min(height, width) // 3
    return torch.tensor([[cx + s, cy + s], [cx + s, cy - s], [cx - s, cy - s]], dtype=torch.float64)


def affine_warp(images: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Warps (N, C, H, W) by the affine map taking ``source`` (3, 2) to ``target`` (N, 3, 2), points (x, y).

    As OpenCV's getAffineTransform + warpAffine: output pixel p samples the input at M^-1 p
    bilinearly, with a reflect-101 border.
    """
    n, _, h, w = images.shape
    system = torch.cat([source.double(), torch.ones(3, 1, dtype=torch.float64)], dim=1)  # rows (x, y, 1)
    forward_t = torch.linalg.solve(system, target.double().cpu())  # (N, 3, 2): [x y 1] @ forward_t = target
    forward = torch.zeros(n, 3, 3, dtype=torch.float64)
    forward[:, :2, :] = forward_t.transpose(1, 2)
    forward[:, 2, 2] = 1
    inverse = torch.linalg.inv(forward)[:, :2, :]  # (N, 2, 3)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    pixels = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)  # (H, W, 3)
    source_xy = torch.einsum("nij,hwj->nhwi", inverse, pixels)  # (N, H, W, 2) in pixel units
    # align_corners=True: -1 and 1 are the centres of the edge pixels; reflection about them is reflect-101
    grid = torch.stack([2 * source_xy[..., 0] / max(w - 1, 1) - 1, 2 * source_xy[..., 1] / max(h - 1, 1) - 1], -1)
    return F.grid_sample(images, grid.to(images.device, images.dtype), mode="bilinear",
                         padding_mode="reflection", align_corners=True)


def displace(images: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Samples (N, C, H, W) at (y + dy, x + dx), dx and dy (N, H, W) in pixels, bilinearly.

    The border reflects about the outer pixel edges (half-sample symmetric), as scipy's
    map_coordinates with order 1 and mode "reflect".
    """
    n, _, h, w = images.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=images.device, dtype=images.dtype),
                            torch.arange(w, device=images.device, dtype=images.dtype), indexing="ij")
    # align_corners=False: pixel i's centre is at (2 i + 1) / size - 1; reflection is about the outer edges
    grid = torch.stack([(2 * (xs + dx) + 1) / w - 1, (2 * (ys + dy) + 1) / h - 1], dim=-1)  # (N, H, W, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def elastic_transform(images: torch.Tensor, p: Elastic, generator: torch.Generator) -> torch.Tensor:
    """A random affine warp, then a smooth random displacement field; parameters scale with the side.

    Affine: each coordinate of the three control points moves by U(-affine, affine). Displacements:
    dx, dy = alpha * Gaussian-filtered U(-1, 1) noise (sigma; scipy's half-sample reflect border,
    truncate 3), shared by all channels, applied with ``displace``.
    """
    n, _, h, w = images.shape
    side = min(h, w)  # the benchmark's IMSIZE (square images)
    source = affine_control_points(h, w)
    jitter = torch.rand((n, 3, 2), generator=generator, device=images.device).double().cpu() * 2 - 1
    warped = affine_warp(images, source, source + p.affine * side * jitter)
    noise = torch.rand((n, 2, h, w), generator=generator, device=images.device) * 2 - 1  # dx, dy
    field = gaussian_filter(noise, p.sigma * side, "reflect", truncate=3.0) * (p.alpha * side)
    return displace(warped, field[:, 0], field[:, 1])


def pixelate(images: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """PIL BOX resize down to int(side * fraction), then back up, rounding to uint8 after each pass.

    PIL resamples horizontally, then vertically, into 8-bit images, rounding halves up; that rounding
    is replayed here (two-pixel box averages often end in exactly .5).
    """
    h, w = images.shape[-2:]
    small_h, small_w = int(h * fraction), int(w * fraction)

    def resize(levels: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:  # 0..255 float64 in and out
        across = box_resize_matrix(levels.shape[-1], out_w).to(levels.device)  # (out_w, W)
        down = box_resize_matrix(levels.shape[-2], out_h).to(levels.device)  # (out_h, H)
        levels = torch.floor(levels @ across.T + 0.5)
        return torch.floor(down @ levels + 0.5)

    levels = torch.round(images.double().clamp(0, 1) * 255)  # exact 8-bit levels: .5 ties must stay exact
    return (resize(resize(levels, small_h, small_w), h, w) / 255).to(images.dtype)


def jpeg_compression(images: torch.Tensor, quality: int, generator: torch.Generator) -> torch.Tensor:
    """Encodes and decodes every image with PIL's JPEG at ``quality`` (its default 4:2:0 subsampling).

    A JPEG codec works one image at a time, so this is the one corruption that loops over images (on
    the CPU).
    """
    from PIL import Image

    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()  # (N, H, W, C)
    decoded = np.empty_like(pixels)
    for index, image in enumerate(pixels):
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, "JPEG", quality=quality)
        buffer.seek(0)
        decoded[index] = np.asarray(Image.open(buffer)).reshape(image.shape)
    return torch.from_numpy(decoded).to(images.device).permute(0, 3, 1, 2).float() / 255
