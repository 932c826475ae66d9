"""SimCLR views made in batched tensor ops, on whatever device the uint8 batch lives on.

One call augments a whole batch: the random resized crop and the flip are one affine grid per sample
fed to a single ``grid_sample``; colour jitter and grayscale are per-sample factors broadcast over the
batch. No Python loop over samples, so the same code is the device-resident loader on a GPU.

Recipe (DESIGN.md section 2): random resized crop with area scale in [0.2, 1] and aspect ratio in
[3/4, 4/3], horizontal flip p=0.5, colour jitter (brightness 0.4, contrast 0.4, saturation 0.4,
hue 0.1) with p=0.8, grayscale p=0.2, then normalisation. Digit-like protocols get the crop only.

Differences from torchvision's per-image transforms, on purpose: a crop whose sides would exceed the
image is clamped to it (torchvision retries ten times, then falls back to a centre crop); the jitter
factors are applied in the fixed order brightness, contrast, saturation, hue (torchvision shuffles it);
hue is rotated in YIQ space, a close linear approximation of torchvision's HSV shift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale uses
_LUMA = (0.299, 0.587, 0.114)


@dataclass
class AugmentSpec:
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool = True
    color: bool = True
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    grayscale_p: float = 0.2


def _uniform(n: int, low: float, high: float, generator: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device) * (high - low) + low


def random_resized_crop(images: torch.Tensor, spec: AugmentSpec, generator: torch.Generator) -> torch.Tensor:
    """images (N, C, H, W) float in [0, 1] -> (N, C, size, size): one crop (and flip) per sample."""
    n, device = images.shape[0], images.device
    area = _uniform(n, *spec.crop_scale, generator, device)  # fraction of the image area
    log_ratio = _uniform(n, math.log(spec.crop_ratio[0]), math.log(spec.crop_ratio[1]), generator, device)
    ratio = torch.exp(log_ratio)
    crop_w = torch.sqrt(area * ratio).clamp(max=1.0)  # (N,) fraction of the image width
    crop_h = torch.sqrt(area / ratio).clamp(max=1.0)
    # centre in [-1, 1] grid units, keeping the crop inside the image
    centre_x = (torch.rand(n, generator=generator, device=device) * 2 - 1) * (1 - crop_w)
    centre_y = (torch.rand(n, generator=generator, device=device) * 2 - 1) * (1 - crop_h)
    flip_sign = torch.ones(n, device=device)
    if spec.flip:
        flip_sign = torch.where(torch.rand(n, generator=generator, device=device) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=device)  # maps output grid coords to input grid coords
    theta[:, 0, 0] = crop_w * flip_sign
    theta[:, 0, 2] = centre_x
    theta[:, 1, 1] = crop_h
    theta[:, 1, 2] = centre_y
    grid = F.affine_grid(theta, [n, images.shape[1], spec.size, spec.size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _grayscale(images: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) -> (N, 1, H, W)
    r, g, b = images.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def _rotate_hue(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotates the chroma of RGB images (N, 3, H, W) by ``turns`` (N,) of a full circle, in YIQ space."""
    to_yiq = images.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    from_yiq = torch.linalg.inv(to_yiq)
    angle = turns * 2 * math.pi
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.zeros(images.shape[0], 3, 3, device=images.device, dtype=images.dtype)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2] = cos, -sin
    rotation[:, 2, 1], rotation[:, 2, 2] = sin, cos
    transform = from_yiq @ rotation @ to_yiq  # (N, 3, 3)
    return torch.einsum("nij,njhw->nihw", transform, images)


def colour_jitter(images: torch.Tensor, spec: AugmentSpec, generator: torch.Generator) -> torch.Tensor:
    """images (N, 3, H, W) in [0, 1]; jitter with probability jitter_p, then grayscale with grayscale_p."""
    n, device = images.shape[0], images.device
    brightness, contrast, saturation, hue = spec.jitter
    apply = (torch.rand(n, generator=generator, device=device) < spec.jitter_p).view(n, 1, 1, 1)
    b = _uniform(n, 1 - brightness, 1 + brightness, generator, device).view(n, 1, 1, 1)
    c = _uniform(n, 1 - contrast, 1 + contrast, generator, device).view(n, 1, 1, 1)
    s = _uniform(n, 1 - saturation, 1 + saturation, generator, device).view(n, 1, 1, 1)
    h = _uniform(n, -hue, hue, generator, device)
    jittered = (images * b).clamp(0, 1)
    grey_mean = _grayscale(jittered).mean(dim=(2, 3), keepdim=True)
    jittered = ((jittered - grey_mean) * c + grey_mean).clamp(0, 1)
    grey = _grayscale(jittered)
    jittered = ((jittered - grey) * s + grey).clamp(0, 1)
    jittered = _rotate_hue(jittered, h).clamp(0, 1)
    images = torch.where(apply, jittered, images)
    to_grey = (torch.rand(n, generator=generator, device=device) < spec.grayscale_p).view(n, 1, 1, 1)
    return torch.where(to_grey, _grayscale(images).expand_as(images), images)


def normalise(images: torch.Tensor, spec: AugmentSpec) -> torch.Tensor:
    mean = images.new_tensor(spec.mean).view(1, -1, 1, 1)
    std = images.new_tensor(spec.std).view(1, -1, 1, 1)
    return (images - mean) / std


def augment_view(batch: torch.Tensor, spec: AugmentSpec, generator: torch.Generator) -> torch.Tensor:
    """uint8 (N, C, H, W) -> one normalised float32 view (N, C, size, size)."""
    images = batch.float().div_(255)
    images = random_resized_crop(images, spec, generator)
    if spec.color and images.shape[1] == 3:
        images = colour_jitter(images, spec, generator)
    return normalise(images, spec)


def two_views(batch: torch.Tensor, spec: AugmentSpec, generator: torch.Generator):
    """uint8 (N, C, H, W) -> two independently augmented views, each (N, C, size, size) float32."""
    return augment_view(batch, spec, generator), augment_view(batch, spec, generator)


def eval_view(batch: torch.Tensor, spec: AugmentSpec) -> torch.Tensor:
    """uint8 (N, C, H, W) -> the un-augmented, resized, normalised float32 (N, C, size, size)."""
    images = batch.float().div_(255)
    if images.shape[-2:] != (spec.size, spec.size):
        images = F.interpolate(images, size=(spec.size, spec.size), mode="bilinear", align_corners=False,
                               antialias=True)
    return normalise(images, spec)
