"""Batched image-filter building blocks for the corruptions, in PyTorch on any device.

Each mirrors the library call the benchmark's generation scripts use, so the parameter tables mean
the same thing here: scipy.ndimage's Gaussian filter (kernel radius int(truncate * sigma + 0.5)) and
its boundary modes, scipy's order-1 zoom (corner-aligned bilinear), OpenCV's filter2D (correlation,
reflect-101 border), PIL's BOX resize, and ImageMagick's motion blur (a one-sided line kernel).
Images are float (N, C, H, W); nothing here loops over samples.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# scipy.ndimage boundary modes, as index maps: nearest = edge repeated (a a | a b c), reflect = half-sample
# symmetric (b a | a b c), mirror = whole-sample symmetric, OpenCV's BORDER_REFLECT_101 (c b | a b c)
PAD_MODES = ("nearest", "reflect", "mirror")


def padded_index(size: int, before: int, after: int, mode: str, device=None) -> torch.Tensor:
    """Source index of every position of a padded axis, (before + size + after,) int64."""
    index = torch.arange(-before, size + after, device=device)
    if mode == "nearest":
        return index.clamp(0, size - 1)
    if mode == "reflect":
        period = index.remainder(2 * size)
        return torch.where(period >= size, 2 * size - 1 - period, period)
    if mode == "mirror":
        if size == 1:
            return torch.zeros_like(index)
        period = index.remainder(2 * size - 2)
        return torch.where(period >= size, 2 * size - 2 - period, period)
    raise ValueError(f"unknown padding mode {mode!r}; choose one of {PAD_MODES}")


def pad(images: torch.Tensor, top: int, bottom: int, left: int, right: int, mode: str) -> torch.Tensor:
    """Pads the last two axes by index maps, so any pad width works (wider than the image included)."""
    height, width = images.shape[-2:]
    rows = padded_index(height, top, bottom, mode, images.device)
    cols = padded_index(width, left, right, mode, images.device)
    return images.index_select(-2, rows).index_select(-1, cols)


def gaussian_kernel1d(sigma: float, truncate: float) -> torch.Tensor:
    """scipy.ndimage's Gaussian taps: radius int(truncate * sigma + 0.5), normalised, float64."""
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return taps / taps.sum()


def correlate(images: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """2-D correlation of every channel of (N, C, H, W) with an odd (kh, kw) kernel, same-size output."""
    n, c, h, w = images.shape
    kh, kw = kernel.shape
    padded = pad(images.reshape(n * c, 1, h, w), kh // 2, kh // 2, kw // 2, kw // 2, mode)
    weight = kernel.to(images.device, images.dtype).view(1, 1, kh, kw)
    return F.conv2d(padded, weight).view(n, c, h, w)


def gaussian_filter(images: torch.Tensor, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> torch.Tensor:
    """Separable Gaussian blur of the two spatial axes, as scipy.ndimage.gaussian_filter per channel.

    scipy skips the filter for sigma <= 1e-15; a radius of 0 (sigma < 0.125 at truncate 4) is the
    identity too.
    """
    if sigma <= 1e-15:
        return images
    taps = gaussian_kernel1d(sigma, truncate)
    if taps.numel() == 1:
        return images
    blurred = correlate(images, taps.view(-1, 1), mode)
    return correlate(blurred, taps.view(1, -1), mode)


def clipped_zoom(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Zooms into the centre by ``factor`` >= 1 and crops back to the input size, (N, C, H, W).

    The centre crop of ceil(side / factor) pixels is resized to round(crop * factor) pixels with
    corner-aligned bilinear interpolation (scipy.ndimage.zoom, order 1), then the central side x side
    window is kept (the extra pixel, if any, is trimmed from the bottom/right).
    """
    height, width = images.shape[-2:]
    crop_h, crop_w = math.ceil(height / factor), math.ceil(width / factor)
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    crop = images[..., top:top + crop_h, left:left + crop_w]
    out_h, out_w = round(crop_h * factor), round(crop_w * factor)  # Python round, as scipy's zoom
    if (out_h, out_w) != (crop_h, crop_w):
        crop = F.interpolate(crop, size=(out_h, out_w), mode="bilinear", align_corners=True)
    trim_top, trim_left = (out_h - height) // 2, (out_w - width) // 2
    return crop[..., trim_top:trim_top + height, trim_left:trim_left + width]


def motion_blur(images: torch.Tensor, radius: float, sigma: float, angles_deg: torch.Tensor) -> torch.Tensor:
    """ImageMagick's MotionBlurImage as a batched line filter; (N, C, H, W), one angle per image (N,).

    ImageMagick's kernel (the benchmark calls it through Wand): width = 2 * ceil(radius) + 1 taps,
    tap i weighted by exp(-i^2 / (2 sigma^2)) (normalised), read at the integer offset
    (ceil(i cos a - 0.5), ceil(i sin a - 0.5)) from the output pixel, x right and y down; pixels
    outside the image repeat the nearest edge pixel (its default virtual-pixel method). The blur
    trails to one side only, as the original does.
    """
    n, c, h, w = images.shape
    width = 2 * math.ceil(radius) + 1
    taps = torch.arange(width, dtype=torch.float64)
    weights = torch.exp(-(taps ** 2) / (2 * sigma * sigma))
    weights = (weights / weights.sum()).tolist()
    angle = angles_deg.to(torch.float64).cpu() * (math.pi / 180)
    # ceil(v - 0.5) rounds halves down, as ImageMagick does
    offset_x = torch.ceil(taps[None, :] * torch.cos(angle)[:, None] - 0.5).long().to(images.device)  # (N, width)
    offset_y = torch.ceil(taps[None, :] * torch.sin(angle)[:, None] - 0.5).long().to(images.device)
    rows = torch.arange(h, device=images.device)
    cols = torch.arange(w, device=images.device)
    flat = images.reshape(n, c, h * w)
    out = torch.zeros_like(flat)
    for tap, weight in enumerate(weights):  # a loop over taps (at most 2 * 12 + 1), never over images
        src_rows = (rows[None, :] + offset_y[:, tap, None]).clamp(0, h - 1)  # (N, H)
        src_cols = (cols[None, :] + offset_x[:, tap, None]).clamp(0, w - 1)  # (N, W)
        source = (src_rows[:, :, None] * w + src_cols[:, None, :]).view(n, 1, h * w)  # (N, 1, H*W)
        out += weight * flat.gather(2, source.expand(n, c, h * w))
    return out.view(n, c, h, w)


def plasma_fractal(count: int, size: int, decay: float, generator: torch.Generator,
                   device=None) -> torch.Tensor:
    """Diamond-square height maps on a torus, (count, size, size) in [0, 1]; size a power of two.

    As the benchmark's fog: the first corner is 0, each new point is the mean of its four
    neighbours plus wibble * U(-wibble, wibble) with wibble = 100 at the coarsest level, divided by
    ``decay`` per level (so the noise amplitude falls by decay^2 per level); the map is finally
    shifted and scaled to [0, 1].
    """
    if size < 2 or size & (size - 1):
        raise ValueError(f"plasma size must be a power of two >= 2, got {size}")
    grid = torch.zeros(count, size, size, dtype=torch.float64, device=device)
    step, wibble = size, 100.0

    def noisy_mean(total: torch.Tensor) -> torch.Tensor:
        noise = torch.rand(total.shape, generator=generator, device=device, dtype=torch.float64)
        return total / 4 + wibble * (noise * 2 - 1) * wibble

    while step >= 2:
        half = step // 2
        corners = grid[:, 0::step, 0::step]  # (count, m, m): points (i * step, j * step)
        square = corners + corners.roll(-1, dims=1)
        square = square + square.roll(-1, dims=2)
        grid[:, half::step, half::step] = noisy_mean(square)  # square centres
        centres = grid[:, half::step, half::step]  # points (i * step + half, j * step + half)
        # edge midpoints: two corners along the edge plus the two centres across it
        grid[:, 0::step, half::step] = noisy_mean(corners + corners.roll(-1, dims=2)
                                                  + centres + centres.roll(1, dims=1))
        grid[:, half::step, 0::step] = noisy_mean(corners + corners.roll(-1, dims=1)
                                                  + centres + centres.roll(1, dims=2))
        step //= 2
        wibble /= decay
    low = grid.amin(dim=(1, 2), keepdim=True)
    grid = grid - low
    return (grid / grid.amax(dim=(1, 2), keepdim=True)).float()


def box_resize_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """PIL's BOX resampling along one axis as an (out_size, in_size) float64 matrix.

    Output pixel i covers input positions [i * s, (i + 1) * s) with s = in / out; an input pixel x
    (centre x + 0.5) contributes when its centre lies within half a footprint of the output centre
    (PIL's box filter: -0.5 < t <= 0.5 in footprint units; with upsampling the footprint is one input
    pixel). Rows are normalised.
    """
    scale = in_size / out_size
    footprint = max(scale, 1.0)
    centre = (torch.arange(out_size, dtype=torch.float64) + 0.5) * scale  # (out,)
    first = torch.clamp((centre - 0.5 * footprint + 0.5).floor(), min=0)  # PIL truncates a positive value
    last = torch.clamp((centre + 0.5 * footprint + 0.5).floor(), max=in_size)
    x = torch.arange(in_size, dtype=torch.float64)
    t = (x[None, :] - centre[:, None] + 0.5) / footprint
    inside = (t > -0.5) & (t <= 0.5) & (x[None, :] >= first[:, None]) & (x[None, :] < last[:, None])
    weights = inside.double()
    return weights / weights.sum(dim=1, keepdim=True)


def quantise(images: torch.Tensor) -> torch.Tensor:
    """Rounds [0, 1] floats to the nearest of the 256 uint8 levels (kept as floats in [0, 1])."""
    return torch.round(images.clamp(0, 1) * 255) / 255
