"""Training loaders: each yields (view1, view2, labels) batches for one epoch at a time.

Every loader is deterministic in (seed, epoch): a resumed run replays the epoch it restarts exactly,
with no RNG state to save. The last partial batch is dropped.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .augment import AugmentSpec, two_views


def seeded_generator(seed: int, epoch: int, stream: int, device: torch.device) -> torch.Generator:
    """An independent random stream per (seed, epoch, stream) on ``device``."""
    generator = torch.Generator(device=device)
    generator.manual_seed((seed * 1_000_003 + epoch) * 97 + stream)
    return generator


class DeviceResidentLoader:
    """The uint8 dataset lives on the device; both views are made there in batched tensor ops."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, spec: AugmentSpec, batch_size: int,
                 seed: int, device: torch.device):
        self.images = images.to(device)  # (N, C, H, W) uint8
        self.labels = labels.to(device)  # (N,) int64
        self.spec = spec
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self.steps_per_epoch = self.images.shape[0] // batch_size

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        generator = seeded_generator(self.seed, epoch, stream=0, device=self.device)
        order = torch.randperm(self.images.shape[0], generator=generator, device=self.device)
        for index in range(self.steps_per_epoch):
            batch = order[index * self.batch_size:(index + 1) * self.batch_size]
            view1, view2 = two_views(self.images[batch], self.spec, generator)
            yield view1, view2, self.labels[batch]
