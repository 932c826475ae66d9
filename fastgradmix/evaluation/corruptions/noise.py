"""Noise corruptions: Gaussian, shot (Poisson) and impulse (salt and pepper), per pixel and channel."""

from __future__ import annotations

import torch


def gaussian_noise(images: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """Adds N(0, std^2) to every value; images (N, C, H, W) in [0, 1]."""
    noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return images + std * noise


def shot_noise(images: torch.Tensor, photons: float, generator: torch.Generator) -> torch.Tensor:
    """Poisson(x * photons) / photons: fewer photons per unit intensity = noisier."""
    return torch.poisson(images * photons, generator=generator) / photons


def impulse_noise(images: torch.Tensor, amount: float, generator: torch.Generator) -> torch.Tensor:
    """Each value becomes 1 (salt) or 0 (pepper), equally likely, with probability ``amount``.

    As scikit-image's random_noise(mode="s&p"), which the benchmark uses: channels are hit independently.
    """
    hit = torch.rand(images.shape, generator=generator, device=images.device) < amount
    salt = torch.rand(images.shape, generator=generator, device=images.device) < 0.5
    return torch.where(hit, salt.to(images.dtype), images)
