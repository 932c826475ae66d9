"""Weather corruptions: snow, frost and fog.

Frost blends random crops of frost photographs. The benchmark's are six photographs (frost1.png ...
frost6.jpg; it draws one of the first five) shipped with its code and with the PyPI package
``imagecorruptions`` (``pip install imagecorruptions``, the ``frost`` extra of this project; not
redistributed here). When that package is installed they are used as the benchmark's scripts use them:
scaled by 0.2 (CIFAR-10-C, images up to 48 px) or 0.3 (Tiny-ImageNet-C), bilinearly like OpenCV's
INTER_LINEAR (half-pixel centres, no antialiasing), and cropped at a uniform position. Without it a
deterministic synthetic texture stands in (``frost_textures``): a plasma-fractal haze, crystal needles
(sparse seeds motion-blurred along random directions) and fine grain, tinted pale blue-white, with the
benchmark's blend weights and random crops but not the photographs' statistics, so frost accuracies are
then not comparable with published CIFAR-10-C / Tiny-ImageNet-C frost numbers. ``frost_source()`` says
which is in use (the corruption report records it).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fastgradmix.evaluation.corruptions.filters import (
    clipped_zoom,
    gaussian_filter,
    motion_blur,
    plasma_fractal,
    quantise,
)
from fastgradmix.evaluation.corruptions.tables import Fog, Frost, Snow

# ITU-R 601 luma, as OpenCV's RGB2GRAY that the benchmark's snow uses
_LUMA = (0.299, 0.587, 0.114)
# the photographs' blue-white cast, as a per-channel gain on the synthetic texture's intensity (R, G, B)
FROST_TINT = (0.80, 0.90, 1.00)
FROST_TEXTURES = 5  # the benchmark draws one of its first five photographs per image
FROST_SEED = 20190101  # the synthetic textures are fixed assets, like the photographs


def _grey(images: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, 1, H, W)
    if images.shape[1] == 1:
        return images
    weights = images.new_tensor(_LUMA).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def _next_power_of_two(value: int) -> int:
    return 1 << max(1, (value - 1).bit_length())


def snow(images: torch.Tensor, p: Snow, generator: torch.Generator) -> torch.Tensor:
    """Zoomed, thresholded noise streaked by motion blur, added twice (rotated by 180 degrees)."""
    n, _, h, w = images.shape
    layer = p.mean + p.std * torch.randn((n, 1, h, w), generator=generator, device=images.device)
    layer = clipped_zoom(layer, p.zoom)
    layer = torch.where(layer < p.threshold, torch.zeros_like(layer), layer)
    angles = torch.rand(n, generator=generator, device=images.device) * 90 - 135
    # the benchmark round-trips the layer through 8-bit PNG before and after ImageMagick's blur
    layer = quantise(motion_blur(quantise(layer), p.blur_radius, p.blur_sigma, angles))
    whitened = torch.maximum(images, _grey(images) * 1.5 + 0.5)
    sky = p.blend * images + (1 - p.blend) * whitened
    return sky + layer + layer.flip(dims=(2, 3))


@functools.lru_cache(maxsize=4)
def frost_textures(side: int) -> torch.Tensor:
    """The synthetic frost photographs for images of ``side`` px, (5, 3, S, S) float in 0..255, CPU.

    Like the benchmark's photographs they are fixed assets: generated from FROST_SEED, independent of
    the corruption seed (which picks the texture and the crop), and cached. S is a power of two
    >= max(4 * side, 64). intensity = 0.35 haze + 0.45 needles + 0.20 grain, each in [0, 1]:
    - haze: a plasma fractal (decay 1.6: coarse, cloudy);
    - needles: seeds on 2 % of the pixels with random brightness, motion-blurred along a random
      direction per texture (radius S / 16, sigma S / 32 taps) in three layers, scaled to max 1;
    - grain: uniform noise blurred with sigma 0.7 px.
    The intensity is tinted by FROST_TINT.
    """
    count, size = FROST_TEXTURES, _next_power_of_two(max(4 * side, 64))
    generator = torch.Generator().manual_seed(FROST_SEED)
    haze = plasma_fractal(count, size, 1.6, generator)[:, None]  # (count, 1, S, S)
    needles = torch.zeros(count, 1, size, size)
    for _ in range(3):
        seeds = torch.rand((count, 1, size, size), generator=generator)
        seeds = torch.where(seeds < 0.02, torch.rand(seeds.shape, generator=generator), torch.zeros_like(seeds))
        angles = torch.rand(count, generator=generator) * 360
        needles += motion_blur(gaussian_filter(seeds, 0.6), size / 16, size / 32, angles)
    # scale so the brightest 1 % of needle pixels saturate
    bright = torch.quantile(needles.flatten(1), 0.99, dim=1).view(count, 1, 1, 1)
    needles = (needles / bright.clamp_min(1e-12)).clamp(0, 1)
    grain = gaussian_filter(torch.rand((count, 1, size, size), generator=generator), 0.7)
    intensity = (0.45 * haze + 0.55 * needles + 0.25 * grain).clamp(0, 1)
    return intensity * torch.tensor(FROST_TINT).view(1, 3, 1, 1) * 255


FROST_PHOTOGRAPHS = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")  # the five drawn from


def frost_photograph_folder() -> Path | None:
    """The folder of the benchmark's frost photographs as the ``imagecorruptions`` package ships them, or None.

    Found without importing the package: its corruption code needs OpenCV and scikit-image (and an older
    SciPy) that this project does not, and only its image files are used."""
    spec = importlib.util.find_spec("imagecorruptions")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = Path(location) / "frost"
        if all((folder / name).is_file() for name in FROST_PHOTOGRAPHS):
            return folder
    return None


def frost_source() -> str:
    """Which frost images the frost corruption blends (recorded in the corruption results)."""
    if frost_photograph_folder() is not None:
        return "the benchmark's frost photographs (imagecorruptions package)"
    return "a synthetic frost texture (imagecorruptions not installed: not comparable with published frost numbers)"


@functools.lru_cache(maxsize=4)
def frost_photographs(side: int, folder=None) -> list[torch.Tensor]:
    """The five photographs, each (3, h, w) float in 0..255, scaled as the benchmark's scripts for images of
    ``side`` px: by 0.2 up to 48 px (CIFAR-10-C), else 0.3 (Tiny-ImageNet-C); sizes rounded as OpenCV's."""
    folder = folder or frost_photograph_folder()
    scale = 0.2 if side <= 48 else 0.3
    scaled = []
    for name in FROST_PHOTOGRAPHS:
        with Image.open(folder / name) as image:
            pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32).copy())  # (H, W, 3)
        height, width = pixels.shape[:2]
        size = (round(height * scale), round(width * scale))
        scaled.append(F.interpolate(pixels.permute(2, 0, 1)[None], size=size, mode="bilinear",
                                    align_corners=False, antialias=False)[0])
    return scaled


def _photograph_crops(n: int, h: int, w: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """A crop (N, 3, h, w) of a drawn photograph per image, at a uniform top-left in [0, H - h) x [0, W - w)."""
    photographs = frost_photographs(max(h, w))
    which = torch.randint(0, len(photographs), (n,), generator=generator, device=device)
    crops = torch.empty(n, 3, h, w, device=device)
    for index, photograph in enumerate(photographs):  # a loop over the five photographs, not the images
        photograph = photograph.to(device)
        rows = (which == index).nonzero().flatten()
        top = torch.randint(0, photograph.shape[1] - h, (n,), generator=generator, device=device)[rows]
        left = torch.randint(0, photograph.shape[2] - w, (n,), generator=generator, device=device)[rows]
        ys = top[:, None] + torch.arange(h, device=device)  # (n_i, h)
        xs = left[:, None] + torch.arange(w, device=device)  # (n_i, w)
        crops[rows] = photograph.permute(1, 2, 0)[ys[:, :, None], xs[:, None, :]].permute(0, 3, 1, 2)
    return crops


def frost(images: torch.Tensor, p: Frost, generator: torch.Generator) -> torch.Tensor:
    """image_weight * image + frost_weight * a random crop of a frost photograph (or texture), 0..255 units."""
    n, c, h, w = images.shape
    device = images.device
    if frost_photograph_folder() is not None:
        crops = _photograph_crops(n, h, w, generator, device)  # (N, 3, h, w)
        crops = _grey(crops) if c == 1 else crops
        return (p.image_weight * images * 255 + p.frost_weight * crops) / 255
    textures = frost_textures(max(h, w)).to(device)  # (T, 3, S, S)
    if c == 1:
        textures = _grey(textures)
    size = textures.shape[-1]
    which = torch.randint(0, FROST_TEXTURES, (n,), generator=generator, device=device)
    top = torch.randint(0, size - h + 1, (n,), generator=generator, device=device)
    left = torch.randint(0, size - w + 1, (n,), generator=generator, device=device)
    rows = top[:, None] + torch.arange(h, device=device)  # (N, H)
    cols = left[:, None] + torch.arange(w, device=device)  # (N, W)
    crops = textures.permute(0, 2, 3, 1)[which[:, None, None], rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    blended = p.image_weight * images * 255 + p.frost_weight * crops.permute(0, 3, 1, 2)
    return blended / 255


def fog(images: torch.Tensor, p: Fog, generator: torch.Generator) -> torch.Tensor:
    """Adds strength * a plasma fractal (one per image, all channels), then rescales by max / (max + strength)."""
    n, _, h, w = images.shape
    size = _next_power_of_two(max(h, w))
    haze = plasma_fractal(n, size, p.decay, generator, images.device)[:, None, :h, :w]  # (N, 1, H, W)
    peak = images.amax(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1)
    return (images + p.strength * haze) * peak / (peak + p.strength)
