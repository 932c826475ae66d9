"""Blur corruptions: defocus (disk kernel), glass (local pixel shuffle), motion (line kernel), zoom."""

from __future__ import annotations

import numpy as np
import torch

from fastgradmix.evaluation.corruptions.filters import clipped_zoom, correlate, gaussian_filter, quantise
from fastgradmix.evaluation.corruptions.filters import motion_blur as line_blur
from fastgradmix.evaluation.corruptions.tables import DefocusBlur, GlassBlur, MotionBlur


def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """The defocus kernel, float64 (k, k): a normalised disk, anti-aliased by a Gaussian.

    As the benchmark: the disk {x^2 + y^2 <= r^2} is drawn on a 17 x 17 grid (larger radii: 2r + 1),
    normalised, then blurred by a 3 x 3 Gaussian of sigma ``alias_blur`` (5 x 5 above radius 8) with
    OpenCV's reflect-101 border. Rows and columns that are exactly zero are trimmed, which leaves the
    filtered image unchanged and keeps the padding smaller than small images.
    """
    half = 8 if radius <= 8 else int(radius)
    offsets = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = ((offsets[None, :] ** 2 + offsets[:, None] ** 2) <= radius ** 2).double()
    disk = disk / disk.sum()
    ksize = 3 if radius <= 8 else 5
    taps = torch.exp(-0.5 * (torch.arange(ksize, dtype=torch.float64) - ksize // 2) ** 2 / alias_blur ** 2)
    taps = taps / taps.sum()
    smooth = correlate(disk[None, None], taps.view(-1, 1), "mirror")
    kernel = correlate(smooth, taps.view(1, -1), "mirror")[0, 0]
    rows = torch.nonzero(kernel.abs().sum(dim=1)).flatten()
    cols = torch.nonzero(kernel.abs().sum(dim=0)).flatten()
    # keep the kernel centred: trim the same amount on both sides
    trim_r = min(int(rows[0]), kernel.shape[0] - 1 - int(rows[-1]))
    trim_c = min(int(cols[0]), kernel.shape[1] - 1 - int(cols[-1]))
    return kernel[trim_r:kernel.shape[0] - trim_r, trim_c:kernel.shape[1] - trim_c]


def defocus_blur(images: torch.Tensor, p: DefocusBlur, generator: torch.Generator) -> torch.Tensor:
    """Correlation with the anti-aliased disk, reflect-101 border (OpenCV's filter2D)."""
    return correlate(images, disk_kernel(p.radius, p.alias_blur), "mirror")


GLASS_SWAPS = ("released", "true")


def shuffle_locally(images: torch.Tensor, max_delta: int, shifts: torch.Tensor, swap: str = "released") -> torch.Tensor:
    """The glass-blur shuffle: sequential swaps of each visited pixel with a nearby one, (N, C, H, W).

    Positions (h, w) are visited from the bottom-right to the top-left, h from H - d down to d + 1 and
    w from W - d down to d + 1 (d = max_delta), and pixel (h, w) swaps with (h + dy, w + dx), where
    ``shifts`` (iterations, positions, 2, N) holds (dy, dx) per visit and image, each in [-d, d - 1].
    Swaps are sequential, so a pixel can travel; the loop runs over positions, each step swapping that
    position in every image of the batch at once.

    ``swap="released"`` is what the benchmark's scripts did when they made the released CIFAR-10-C and
    Tiny-ImageNet-C: their ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on an (H, W, C) NumPy array swaps
    views, not values (numpy issue 14428), so pixel (h', w') is copied onto (h, w) and itself stays as it
    was. ``"true"`` exchanges the two pixels, as the scripts meant to.
    """
    if swap not in GLASS_SWAPS:
        raise ValueError(f"swap must be one of {GLASS_SWAPS}, got {swap!r}")
    n, c, h, w = images.shape
    d = max_delta
    positions = [(row, col) for row in range(h - d, d, -1) for col in range(w - d, d, -1)]
    if shifts.shape[1:] != (len(positions), 2, n):
        raise ValueError(f"shifts must be (iterations, {len(positions)}, 2, {n}), got {tuple(shifts.shape)}")
    flat = images.reshape(n, c, h * w).clone()  # (N, C, H*W)
    batch = torch.arange(n, device=images.device)
    for iteration_shifts in shifts:
        for (row, col), (dy, dx) in zip(positions, iteration_shifts, strict=True):
            here = row * w + col
            there = (row + dy) * w + (col + dx)  # (N,)
            pixel = flat[:, :, here].clone()  # (N, C)
            flat[:, :, here] = flat[batch, :, there]
            if swap == "true":
                flat[batch, :, there] = pixel
    return flat.view(n, c, h, w)


def glass_shift_count(height: int, width: int, max_delta: int) -> int:
    """How many positions the shuffle visits per iteration."""
    return max(0, height - 2 * max_delta) * max(0, width - 2 * max_delta)


def glass_blur(images: torch.Tensor, p: GlassBlur, generator: torch.Generator, swap: str = "released") -> torch.Tensor:
    """Blur, shuffle pixels locally, blur again: frosted glass.

    As the benchmark: Gaussian blur (scipy-style, edge mode nearest), quantise to uint8, then
    ``p.iterations`` passes of ``shuffle_locally`` with uniform offsets in [-d, d - 1], blur again.
    ``swap``: "released" (the released data sets' copy, default) or "true" (see ``shuffle_locally``).
    """
    n, _, h, w = images.shape
    blurred = quantise(gaussian_filter(images, p.sigma, "nearest"))
    visits = glass_shift_count(h, w, p.max_delta)
    shifts = torch.randint(-p.max_delta, p.max_delta, (p.iterations, visits, 2, n), generator=generator,
                           device=images.device)
    return gaussian_filter(shuffle_locally(blurred, p.max_delta, shifts, swap), p.sigma, "nearest")


def motion_blur(images: torch.Tensor, p: MotionBlur, generator: torch.Generator) -> torch.Tensor:
    """ImageMagick-style motion blur at an angle U(-45, 45) degrees per image, quantised to uint8.

    The benchmark calls ImageMagick's MotionBlurImage through Wand; filters.motion_blur rebuilds its
    kernel (one-sided Gaussian-weighted line of 2 * ceil(radius) + 1 taps, edge-repeat border).
    """
    angles = torch.rand(images.shape[0], generator=generator, device=images.device) * 90 - 45
    return quantise(line_blur(quantise(images), p.radius, p.sigma, angles))


def zoom_factors(end: float) -> np.ndarray:
    """The benchmark's factors np.arange(1, end, 0.01), including its floating-point extra step."""
    return np.arange(1, end, 0.01)


def zoom_blur(images: torch.Tensor, end: float, generator: torch.Generator) -> torch.Tensor:
    """Mean of the image and its centre zooms by every factor in arange(1, end, 0.01)."""
    factors = zoom_factors(end)
    total = images.clone()
    for factor in factors:
        total += clipped_zoom(images, float(factor))
    return total / (len(factors) + 1)

