"""``--loader device``: the uint8 dataset lives on the device and both views are made there in batched
tensor ops (data/augment.py), so a GPU run needs no input workers at all."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from fastgradmix.data.augment import AugmentSpec, two_views
from fastgradmix.data.loaders.sharding import (
    DEVICE_AUGMENT_STREAM,
    check_rank,
    epoch_batches,
    seeded_generator,
    steps_per_epoch,
)


class DeviceResidentLoader:
    """The uint8 dataset lives on the device; both views are made there in batched tensor ops."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, spec: AugmentSpec, batch_size: int,
                 seed: int, device: torch.device, *, rank: int = 0, world_size: int = 1):
        check_rank(rank, world_size)
        self.images = images.to(device)  # (N, C, H, W) uint8
        self.labels = labels.to(device)  # (N,) int64
        self.spec = spec
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self.rank, self.world_size = rank, world_size
        self.steps_per_epoch = steps_per_epoch(self.images.shape[0], batch_size, world_size)

    def describe(self) -> str:
        return f"device (dataset resident on {self.device}, batched tensor ops)"

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(view1, view2, labels, indices) per step; indices (B,) int64 on the device."""
        rows = epoch_batches(self.images.shape[0], self.batch_size, self.seed, epoch, self.rank, self.world_size)
        batches = torch.from_numpy(rows)  # (steps, B): one copy to the device per epoch, asynchronous on a GPU
        batches = batches.pin_memory().to(self.device, non_blocking=True) if self.device.type == "cuda" else batches
        generator = seeded_generator(self.seed, epoch, DEVICE_AUGMENT_STREAM, self.device, self.rank)
        for batch in batches:
            view1, view2 = two_views(self.images[batch], self.spec, generator)
            yield view1, view2, self.labels[batch], batch
