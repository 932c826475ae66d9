"""The torch fallback: torchvision transforms v2, one sample at a time, in DataLoader worker processes.

The views are the recipe of DESIGN.md section 2 in torchvision's own transforms: RandomResizedCrop
(scale 0.2-1), RandomHorizontalFlip, RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.1), p=0.8),
RandomGrayscale(0.2), then conversion to float and Normalize; MNIST-like data (flip=False,
color=False) get the crop only, and colour ops need three channels; ``--views rotate`` is RandomRotation
(bilinear) and a resize, no crop.

Reproducible: sample i of epoch e on rank r is augmented with torch's CPU generator seeded from
mix_seed(seed, e, r, i), so the batches are the same for any number of workers and whatever order the
workers finish in. The worker processes persist across epochs: the batch sampler (in the main process)
hands them (epoch, index) keys, so a new epoch needs no new workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info
from torchvision.transforms import v2

from fastgradmix.data.augment import AugmentSpec
from fastgradmix.data.loaders.sharding import check_rank, epoch_batches, mix_seed, steps_per_epoch


def view_transform(spec: AugmentSpec, channels: int):
    """One SimCLR view of a uint8 (C, H, W) image -> normalised float32 (C, size, size)."""
    if spec.crop:
        steps = [v2.RandomResizedCrop(spec.size, scale=spec.crop_scale, ratio=spec.crop_ratio, antialias=True)]
    else:  # --views rotate: the whole image, rotated (bilinear, corners 0), then resized
        steps = [v2.RandomRotation(spec.rotate_degrees, interpolation=v2.InterpolationMode.BILINEAR)] \
            if spec.rotate_degrees > 0 else []
        steps.append(v2.Resize((spec.size, spec.size), antialias=True))
    if spec.flip:
        steps.append(v2.RandomHorizontalFlip())
    if spec.color and channels == 3:
        steps += [v2.RandomApply([v2.ColorJitter(*spec.jitter)], p=spec.jitter_p), v2.RandomGrayscale(spec.grayscale_p)]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(spec.mean), list(spec.std))]
    return v2.Compose(steps)


def eval_transform(spec: AugmentSpec, height: int, width: int):
    """uint8 (C, H, W) -> float32 pixels (C, size, size) in 0..255, resized (bilinear, antialiased) when needed."""
    steps = [v2.ToDtype(torch.float32, scale=False)]
    if (height, width) != (spec.size, spec.size):
        steps.append(v2.Resize((spec.size, spec.size), antialias=True))
    return v2.Compose(steps)


@contextmanager
def _seeded(seed: int):
    """torch's CPU generator (what torchvision's random transforms draw from) seeded for one sample. In the
    main process (workers=0) its state is restored afterwards, so the training process is left as it was."""
    generator = torch.default_generator
    saved = generator.get_state() if get_worker_info() is None else None
    generator.manual_seed(seed)
    try:
        yield
    finally:
        if saved is not None:
            generator.set_state(saved)


class _TwoViews(Dataset):
    """key (epoch, index) -> (view1, view2, label, index) of image ``index``, seeded per (seed, epoch, rank,
    index); the index comes back with the views (collated to (B,) int64)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, spec: AugmentSpec, seed: int, rank: int):
        self.images, self.labels = images, labels  # (N, C, H, W) uint8, (N,) int64
        self.transform = view_transform(spec, images.shape[1])
        self.seed, self.rank = seed, rank

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        image = self.images[index]
        with _seeded(mix_seed(self.seed, epoch, self.rank, index)):
            return self.transform(image), self.transform(image), self.labels[index], index


class _EpochBatches:
    """The DataLoader's batch sampler: the current epoch's batches of (epoch, index) keys."""

    def __init__(self):
        self.batches: list[list[tuple[int, int]]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class TorchLoader:
    """Training batches (view1, view2, labels, indices) from a DataLoader with ``workers`` processes (0:
    in-process)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, spec: AugmentSpec, batch_size: int, seed: int,
                 device: torch.device, *, workers: int = 2, rank: int = 0, world_size: int = 1):
        check_rank(rank, world_size)
        self.n, self.batch_size, self.seed = images.shape[0], batch_size, seed
        self.rank, self.world_size, self.workers = rank, world_size, workers
        self.steps_per_epoch = steps_per_epoch(self.n, batch_size, world_size)
        self.sampler = _EpochBatches()
        dataset = _TwoViews(images.cpu(), labels.cpu(), spec, seed, rank)
        self.loader = DataLoader(dataset, batch_sampler=self.sampler, num_workers=workers,
                                 persistent_workers=workers > 0, pin_memory=device.type == "cuda")

    def describe(self) -> str:
        return f"torch (torchvision v2 per sample, {self.workers} DataLoader workers)"

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        rows = epoch_batches(self.n, self.batch_size, self.seed, epoch, self.rank, self.world_size)
        self.sampler.batches = [[(epoch, index) for index in row] for row in rows.tolist()]
        yield from self.loader


class _EvalImages(Dataset):
    def __init__(self, images: torch.Tensor, transform):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(self.images[index])


class TorchEvalPixels:
    """Un-augmented evaluation pixels in stored order, resized per sample in DataLoader workers; normalised
    in torch by loaders.normalise_pixels like every loader's."""

    def __init__(self, spec: AugmentSpec, device: torch.device, *, workers: int = 2):
        self.spec, self.workers, self.pin = spec, workers, device.type == "cuda"

    def pixels(self, images: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
        """uint8 (N, C, H, W) -> float32 (B, C, size, size) batches in 0..255, every image once, in order."""
        transform = eval_transform(self.spec, *images.shape[-2:])
        yield from DataLoader(_EvalImages(images.cpu(), transform), batch_size=batch_size, shuffle=False,
                              num_workers=self.workers, pin_memory=self.pin)
