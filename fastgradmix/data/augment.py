"""SimCLR views made in batched tensor ops, on whatever device the uint8 batch lives on.

One call augments a whole batch: the random resized crop and the flip are one affine grid per sample
fed to a single ``grid_sample``; colour jitter and grayscale are per-sample factors broadcast over the
batch. No Python loop over samples, so the same code is the device-resident loader on a GPU.

Recipe (DESIGN.md section 2): random resized crop with area scale in [0.2, 1] and aspect ratio in
[3/4, 4/3], horizontal flip p=0.5, colour jitter (brightness 0.4, contrast 0.4, saturation 0.4,
hue 0.1) with p=0.8, grayscale p=0.2, then normalisation. Digit-like protocols get the crop only; the
published MNIST views (``--views rotate``) a rotation within +-5 degrees and nothing else (``view_spec``).

Like torchvision's RandomResizedCrop, a crop draws up to ten (area, aspect ratio) attempts and keeps the
first that fits inside the image (all ten are drawn at once, so this stays batched), else takes the whole
image (its aspect ratio clamped to the range), so every loader (dali, torch, device) crops alike.
Differences from torchvision's per-image transforms, on purpose: crops are sub-pixel; the jitter
factors are applied in the fixed order brightness, contrast, saturation, hue (torchvision shuffles it);
hue is rotated in YIQ space, a close linear approximation of torchvision's HSV shift.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale uses
_LUMA = (0.299, 0.587, 0.114)
_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))
_FROM_YIQ = tuple(map(tuple, torch.linalg.inv(torch.tensor(_TO_YIQ, dtype=torch.float64)).tolist()))


@functools.lru_cache(maxsize=64)
def _constant(values: tuple, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A small constant tensor made once per device and dtype, so later batches on a GPU need no
    host-to-device copy (a synchronising one). Shared: never modify it in place."""
    return torch.tensor(values, dtype=dtype, device=device)


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
    crop: bool = True  # random resized crop (False: the whole image, resized to ``size``)
    rotate_degrees: float = 0.0  # > 0: a rotation by an angle drawn uniformly in [-d, d] degrees


def view_spec(views: str, size: int, mean: tuple[float, ...], std: tuple[float, ...], data_flip: bool,
              data_color: bool, rotate_degrees: float = 5.0) -> AugmentSpec:
    """The training views ``--views`` names: ``simclr`` (crop, flip, colour jitter, grayscale),
    ``simclr-noflip``, ``crop`` (crop only), ``rotate`` (a rotation within +-rotate_degrees and nothing else,
    the published MNIST views) or ``auto`` (the data set's own flip/colour flags, as before the presets)."""
    kinds = {
        "auto": dict(flip=data_flip, color=data_color),
        "simclr": dict(flip=True, color=True),
        "simclr-noflip": dict(flip=False, color=True),
        "crop": dict(flip=False, color=False),
        "rotate": dict(flip=False, color=False, crop=False, rotate_degrees=rotate_degrees),
    }
    if views not in kinds:
        raise ValueError(f"unknown views {views!r}; choose one of {tuple(kinds)}")
    return AugmentSpec(size=size, mean=mean, std=std, **kinds[views])


def _uniform(n: int, low: float, high: float, generator: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device) * (high - low) + low


CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop


def crop_sides(n: int, height: int, width: int, spec: AugmentSpec, generator: torch.Generator,
               device) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop width and height as fractions of the image's, (N,) each: the first of CROP_ATTEMPTS draws of
    (area fraction, aspect ratio w/h) that fits in the image, else the whole image with its ratio clamped."""
    attempts = _uniform(n * CROP_ATTEMPTS, 0.0, 1.0, generator, device).view(n, CROP_ATTEMPTS)
    area = attempts * (spec.crop_scale[1] - spec.crop_scale[0]) + spec.crop_scale[0]
    low, high = math.log(spec.crop_ratio[0]), math.log(spec.crop_ratio[1])
    ratio = torch.exp(_uniform(n * CROP_ATTEMPTS, low, high, generator, device).view(n, CROP_ATTEMPTS))
    image_ratio = width / height
    crop_w = torch.sqrt(area * ratio / image_ratio)  # (N, A): w_px / W = sqrt(area H W ratio) / W
    crop_h = torch.sqrt(area / ratio * image_ratio)
    fits = (crop_w <= 1) & (crop_h <= 1)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # the first fitting attempt (0 if none fits)
    clamped = min(max(image_ratio, spec.crop_ratio[0]), spec.crop_ratio[1])
    whole_w, whole_h = min(1.0, clamped / image_ratio), min(1.0, image_ratio / clamped)
    found = fits.any(dim=1)
    crop_w = torch.where(found, crop_w.gather(1, first).squeeze(1), whole_w)
    crop_h = torch.where(found, crop_h.gather(1, first).squeeze(1), whole_h)
    return crop_w, crop_h


def random_resized_crop(images: torch.Tensor, spec: AugmentSpec, generator: torch.Generator) -> torch.Tensor:
    """images (N, C, H, W) float in [0, 1] -> (N, C, size, size): one crop (and flip) per sample."""
    n, device = images.shape[0], images.device
    crop_w, crop_h = crop_sides(n, images.shape[2], images.shape[3], spec, generator, device)  # (N,) fractions
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


def random_rotation(images: torch.Tensor, spec: AugmentSpec, generator: torch.Generator) -> torch.Tensor:
    """images (N, C, H, W) float in [0, 1] -> (N, C, size, size): each rotated about its centre by an angle
    drawn uniformly in [-rotate_degrees, rotate_degrees] (counter-clockwise positive, as torchvision), corners
    filled with 0, and resized to ``size`` in the same bilinear sampling."""
    n, device = images.shape[0], images.device
    angle = _uniform(n, -spec.rotate_degrees, spec.rotate_degrees, generator, device) * (math.pi / 180)
    cos, sin = torch.cos(angle), torch.sin(angle)
    height, width = images.shape[-2:]
    theta = torch.zeros(n, 2, 3, device=device)  # output grid coords -> input grid coords (normalised [-1, 1])
    # an output pixel at angle a counter-clockwise reads the input at -a; the aspect ratio converts units
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * height / width
    theta[:, 1, 0], theta[:, 1, 1] = sin * width / height, cos
    grid = F.affine_grid(theta, [n, images.shape[1], spec.size, spec.size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _grayscale(images: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) -> (N, 1, H, W)
    r, g, b = images.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def _rotate_hue(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotates the chroma of RGB images (N, 3, H, W) by ``turns`` (N,) of a full circle, in YIQ space."""
    to_yiq = _constant(_TO_YIQ, images.device, images.dtype)
    from_yiq = _constant(_FROM_YIQ, images.device, images.dtype)
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
    mean = _constant(tuple(spec.mean), images.device, images.dtype).view(1, -1, 1, 1)
    std = _constant(tuple(spec.std), images.device, images.dtype).view(1, -1, 1, 1)
    return (images - mean) / std


def augment_view(batch: torch.Tensor, spec: AugmentSpec, generator: torch.Generator) -> torch.Tensor:
    """uint8 (N, C, H, W) -> one normalised float32 view (N, C, size, size)."""
    images = batch.float().div_(255)
    if spec.crop:
        images = random_resized_crop(images, spec, generator)
    elif spec.rotate_degrees > 0:
        images = random_rotation(images, spec, generator)
    elif images.shape[-2:] != (spec.size, spec.size):
        images = F.interpolate(images, size=(spec.size, spec.size), mode="bilinear", align_corners=False,
                               antialias=True)
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
