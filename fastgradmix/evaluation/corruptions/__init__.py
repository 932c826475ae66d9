"""Common corruptions (Hendrycks & Dietterich, ICLR 2019) for robustness evaluation of small images.

``corrupt(images, name, severity, seed)`` applies one of the 15 benchmark corruptions at severity
1-5 to a uint8 batch (N, C, H, W), C = 1 or 3, and returns a uint8 batch of the same shape. The
parameters come from the CIFAR-10-C table for images up to 48 px and the Tiny-ImageNet-C table above
(``tables.py`` lists every value, with its meaning). The output depends only on the input batch, the
corruption, the severity, the table and the seed (and the device: CPU and CUDA random streams differ).

Written for this project from the benchmark's description and generation scripts, batched in PyTorch
(no loop over images except JPEG's codec). Deliberate differences from the scripts:
- frost blends the benchmark's frost photographs when the ``imagecorruptions`` package that ships them is
  installed, else a synthesised texture (see ``weather.py``);
- glass blur reproduces the released data sets by default: their scripts' in-place "swap" copies one
  pixel onto the other (numpy issue 14428); ``glass_swap="true"`` swaps (see ``blur.shuffle_locally``);
- motion blur rebuilds ImageMagick's line kernel instead of calling ImageMagick (``filters.py``);
- results are rounded to uint8 (the scripts truncate with np.uint8, which darkens by half a level);
- single-channel images are supported (grey = the image itself where the scripts convert RGB);
- other sizes than 32 / 64 px use the nearer table; lengths in pixels (blur radii, glass-blur
  offsets) are kept, lengths given as fractions of the side (elastic transform) scale.

``released.load_cifar10_c`` reads the released CIFAR-10-C arrays (<name>.npy + labels.npy) instead.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fastgradmix.evaluation.corruptions import blur, digital, noise, weather
from fastgradmix.evaluation.corruptions.blur import GLASS_SWAPS
from fastgradmix.evaluation.corruptions.tables import CORRUPTIONS, TABLES, table_for_side

__all__ = ["CORRUPTIONS", "GLASS_SWAPS", "TABLES", "corrupt", "parameters", "table_for_side"]

_FUNCTIONS: dict[str, Callable] = {
    "gaussian_noise": noise.gaussian_noise,
    "shot_noise": noise.shot_noise,
    "impulse_noise": noise.impulse_noise,
    "defocus_blur": blur.defocus_blur,
    "glass_blur": blur.glass_blur,
    "motion_blur": blur.motion_blur,
    "zoom_blur": blur.zoom_blur,
    "snow": weather.snow,
    "frost": weather.frost,
    "fog": weather.fog,
    "brightness": digital.brightness,
    "contrast": digital.contrast,
    "elastic_transform": digital.elastic_transform,
    "pixelate": digital.pixelate,
    "jpeg_compression": digital.jpeg_compression,
}


def parameters(name: str, severity: int, table: str):
    """The table entry of ``name`` at ``severity`` (1-5) in ``table`` ("cifar10-c" or "tinyimagenet-c")."""
    if name not in _FUNCTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    if table not in TABLES:
        raise ValueError(f"unknown corruption table {table!r}; choose from {', '.join(TABLES)}")
    if not 1 <= severity <= 5:
        raise ValueError(f"severity must be 1-5, got {severity}")
    return TABLES[table][name][severity - 1]


def corrupt(images: torch.Tensor, name: str, severity: int, seed: int = 0, table: str | None = None,
            glass_swap: str = "released") -> torch.Tensor:
    """uint8 (N, C, H, W), C in {1, 3} -> the corrupted uint8 batch of the same shape, on the same device.

    ``glass_swap``: glass blur's pixel "swap" as in the released data sets (a copy, the default) or a true
    swap (blur.shuffle_locally)."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 images (N, 1 or 3, H, W), got {images.dtype} {tuple(images.shape)}")
    table = table or table_for_side(max(images.shape[-2:]))
    param = parameters(name, severity, table)
    if images.shape[0] == 0:
        return images.clone()
    generator = torch.Generator(device=images.device)
    generator.manual_seed(seed)
    extra = {"swap": glass_swap} if name == "glass_blur" else {}
    corrupted = _FUNCTIONS[name](images.float() / 255, param, generator, **extra)
    return (corrupted.clamp(0, 1) * 255).round().to(torch.uint8)
