"""Weather corruptions: snow, frost and fog.

Frost deviates from the benchmark on purpose. The original blends crops of six frost photographs
(frost1.png ... frost6.jpg, shipped with the benchmark's code, not redistributable here and not
downloadable offline). We synthesise a deterministic frost texture instead (``frost_textures``): a
plasma-fractal haze, crystal needles (sparse seeds motion-blurred along random directions) and fine
grain, tinted pale blue-white. It keeps the benchmark's blend weights and random crops, but its
statistics are not those of the photographs, so frost accuracies are not comparable with published
CIFAR-10-C / Tiny-ImageNet-C frost numbers; load the released CIFAR-10-C files for those.
"""

from __future__ import annotations

import functools

import torch

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


def frost(images: torch.Tensor, p: Frost, generator: torch.Generator) -> torch.Tensor:
    """image_weight * image + frost_weight * a random crop of a frost texture, in 0..255 units."""
    n, c, h, w = images.shape
    device = images.device
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
