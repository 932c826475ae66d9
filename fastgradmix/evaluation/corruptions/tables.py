"""Severity tables of the 15 Hendrycks & Dietterich corruptions for small images.

Two tables, as in the benchmark's generation scripts (hendrycks/robustness, files
ImageNet-C/create_c/make_cifar_c.py and make_tinyimagenet_c.py): CIFAR-10-C for 32 px images and
Tiny-ImageNet-C for 64 px images. Entry s - 1 of each tuple is severity s. Pixel values are in [0, 1]
unless a parameter says otherwise; lengths are in pixels unless they are fractions of the image side.
"""

from __future__ import annotations

from typing import NamedTuple


class GlassBlur(NamedTuple):
    sigma: float  # Gaussian blur before and after the shuffle (scipy-style, truncate 4)
    max_delta: int  # a pixel swaps with one at offset in [-max_delta, max_delta - 1] per axis
    iterations: int  # passes of the local shuffle


class DefocusBlur(NamedTuple):
    radius: float  # radius of the disk kernel, pixels
    alias_blur: float  # sigma of the 3x3 Gaussian that anti-aliases the disk


class MotionBlur(NamedTuple):
    radius: float  # the line kernel has 2 * ceil(radius) + 1 taps (ImageMagick's kernel width)
    sigma: float  # the taps are weighted by a one-sided Gaussian of this sigma, in taps


class Fog(NamedTuple):
    strength: float  # weight of the plasma-fractal haze added to the image
    decay: float  # wibble decay of the diamond-square fractal: larger = smoother haze


class Frost(NamedTuple):
    image_weight: float  # out = image_weight * image + frost_weight * frost texture (0..255 units)
    frost_weight: float


class Snow(NamedTuple):
    mean: float  # the snow layer starts as N(mean, std^2) noise, one value per pixel
    std: float
    zoom: float  # the noise is zoomed by this factor (bigger flakes)
    threshold: float  # values below it become 0 (no snow)
    blur_radius: float  # motion blur of the flakes (ImageMagick radius, sigma; angle U(-135, -45) degrees)
    blur_sigma: float
    blend: float  # image = blend * image + (1 - blend) * max(image, 1.5 * grey + 0.5), a whitened sky


class Elastic(NamedTuple):
    alpha: float  # displacement magnitude, fraction of the image side
    sigma: float  # smoothness of the displacement field (Gaussian sigma), fraction of the side
    affine: float  # max jitter of the three affine control points, fraction of the side


CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog",
    "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)

CIFAR10_C = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # std of additive N(0, std^2) noise
    "shot_noise": (500, 250, 100, 75, 50),  # photons per unit intensity: out = Poisson(x * c) / c
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),  # fraction of values set to 0 or 1 (half each)
    "defocus_blur": (DefocusBlur(0.3, 0.4), DefocusBlur(0.4, 0.5), DefocusBlur(0.5, 0.6), DefocusBlur(1, 0.2),
                     DefocusBlur(1.5, 0.1)),
    "glass_blur": (GlassBlur(0.05, 1, 1), GlassBlur(0.25, 1, 1), GlassBlur(0.4, 1, 1), GlassBlur(0.25, 1, 2),
                   GlassBlur(0.4, 1, 2)),
    "motion_blur": (MotionBlur(6, 1), MotionBlur(6, 1.5), MotionBlur(6, 2), MotionBlur(8, 2), MotionBlur(9, 2.5)),
    # zoom factors np.arange(1, end, 0.01); floating point makes the first end give 7 factors (1.00..1.06)
    "zoom_blur": (1.06, 1.11, 1.16, 1.21, 1.26),
    "snow": (Snow(0.1, 0.2, 1, 0.6, 8, 3, 0.95), Snow(0.1, 0.2, 1, 0.5, 10, 4, 0.9),
             Snow(0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), Snow(0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
             Snow(0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
    "frost": (Frost(1, 0.2), Frost(1, 0.3), Frost(0.9, 0.4), Frost(0.85, 0.4), Frost(0.75, 0.45)),
    "fog": (Fog(0.2, 3), Fog(0.5, 3), Fog(0.75, 2.5), Fog(1, 2), Fog(1.5, 1.75)),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to the HSV value channel
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # out = (x - channel mean) * c + channel mean
    "elastic_transform": (Elastic(0, 0, 0.08), Elastic(0.05, 0.2, 0.07), Elastic(0.08, 0.06, 0.06),
                          Elastic(0.1, 0.04, 0.05), Elastic(0.1, 0.03, 0.03)),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),  # box-downsample to int(side * c), box-upsample back
    "jpeg_compression": (80, 65, 58, 50, 40),  # JPEG quality
}

TINY_IMAGENET_C = {
    "gaussian_noise": (0.04, 0.08, 0.12, 0.15, 0.18),
    "shot_noise": (250, 100, 50, 30, 15),
    "impulse_noise": (0.01, 0.02, 0.05, 0.08, 0.14),
    "defocus_blur": (DefocusBlur(0.5, 0.6), DefocusBlur(1, 0.1), DefocusBlur(1.5, 0.1), DefocusBlur(2.5, 0.01),
                     DefocusBlur(3, 0.1)),
    "glass_blur": (GlassBlur(0.1, 1, 1), GlassBlur(0.5, 1, 1), GlassBlur(0.6, 1, 2), GlassBlur(0.7, 2, 1),
                   GlassBlur(0.9, 2, 2)),
    "motion_blur": (MotionBlur(10, 1), MotionBlur(10, 1.5), MotionBlur(10, 2), MotionBlur(10, 2.5),
                    MotionBlur(12, 3)),
    "zoom_blur": (1.06, 1.11, 1.16, 1.21, 1.26),
    "snow": (Snow(0.1, 0.2, 1, 0.6, 8, 3, 0.8), Snow(0.1, 0.2, 1, 0.5, 10, 4, 0.8),
             Snow(0.15, 0.3, 1.75, 0.55, 10, 4, 0.7), Snow(0.25, 0.3, 2.25, 0.6, 12, 6, 0.65),
             Snow(0.3, 0.3, 1.25, 0.65, 14, 12, 0.6)),
    "frost": (Frost(1, 0.3), Frost(0.9, 0.4), Frost(0.8, 0.45), Frost(0.75, 0.5), Frost(0.7, 0.55)),
    "fog": (Fog(0.4, 3), Fog(0.7, 3), Fog(1, 2.5), Fog(1.5, 2), Fog(2, 1.75)),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "elastic_transform": (Elastic(0, 0, 0.08), Elastic(0.05, 0.3, 0.06), Elastic(0.1, 0.08, 0.06),
                          Elastic(0.1, 0.03, 0.03), Elastic(0.16, 0.03, 0.02)),
    "pixelate": (0.9, 0.8, 0.7, 0.6, 0.5),
    "jpeg_compression": (65, 58, 50, 40, 25),
}

TABLES = {"cifar10-c": CIFAR10_C, "tinyimagenet-c": TINY_IMAGENET_C}


def table_for_side(side: int) -> str:
    """The table whose image size is nearer: CIFAR-10-C up to 48 px, Tiny-ImageNet-C above."""
    return "cifar10-c" if side <= 48 else "tinyimagenet-c"
