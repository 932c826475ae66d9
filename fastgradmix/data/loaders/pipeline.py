"""Input pipelines: the loader seam of the training loop, evaluation views, and the factory.

Every training loader has ``steps_per_epoch`` and ``epoch(epoch)``, which yields (view1, view2, labels,
indices) batches: views (B, C, size, size) float, labels (B,) int64, indices (B,) int64 the rows of the
training set the batch was made from (``--cam-schedule epoch`` keeps a box per row). Evaluation views
(``EvalViews.batches(images, batch_size)``) are un-augmented normalised views of uint8 (N, C, H, W) images
in stored order, the last batch partial; the chosen loader makes the pixels (resized when needed) and the
normalisation is the same code for all, so without resizing every loader gives evaluation inputs identical
to augment.eval_view.
Three implementations, chosen with ``--loader``:

- ``dali`` (dali.py): NVIDIA DALI pipelines, on the GPU or CPU-only;
- ``torch`` (torch_workers.py): torchvision transforms per sample in DataLoader workers;
- ``device`` (device_resident.py): the uint8 dataset lives on the device, views made in batched tensor ops (augment.py).

``auto`` picks dali when it is installed (not for ``--views rotate``, which DALI's graph lacks), else device
on a GPU, else torch. All are deterministic in
(seed, epoch, rank) -- a resumed run replays the epoch it restarts, with no RNG state to save -- and
shard by (rank, world_size) with the one rule of sharding.py: disjoint shards, every sample at most once
per epoch, the last partial batch dropped. Pass rank/world_size from torch.distributed (distributed/collectives.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch

from fastgradmix.common.errors import UserError
from fastgradmix.data.augment import AugmentSpec, eval_view, normalise
from fastgradmix.data.loaders.device_resident import DeviceResidentLoader
from fastgradmix.data.loaders.sharding import require_steps
from fastgradmix.data.openset import OpenSetData

LOADER_KINDS = ("auto", "dali", "torch", "device")

class TrainLoader(Protocol):
    steps_per_epoch: int

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]: ...

    def describe(self) -> str: ...


class PixelSource(Protocol):
    def pixels(self, images: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
        """uint8 (N, C, H, W) -> float32 (B, C, size, size) in 0..255, resized if needed, in stored order."""
        ...


class EvalViews:
    """Un-augmented evaluation batches: the loader's pixels (None: the device's), normalised on ``device``."""

    def __init__(self, spec: AugmentSpec, device: torch.device, source: PixelSource | None = None):
        self.spec, self.device, self.source = spec, device, source

    def batches(self, images: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
        """uint8 (N, C, H, W) -> normalised float32 (B, C, size, size) batches on the device, in order."""
        if self.source is None:  # batched tensor ops on the device
            for start in range(0, images.shape[0], batch_size):
                yield eval_view(images[start:start + batch_size].to(self.device, non_blocking=True), self.spec)
            return
        for pixels in self.source.pixels(images, batch_size):
            yield normalise(pixels.to(self.device, non_blocking=True).div_(255), self.spec)


@dataclass
class InputPipeline:
    kind: str  # the loader actually used (auto resolved)
    train: TrainLoader
    eval: EvalViews

    def describe(self) -> str:
        return f"input pipeline: {self.train.describe()}, {self.train.steps_per_epoch} steps per epoch"


def resolve_kind(kind: str, device: torch.device) -> str:
    """--loader auto -> dali if installed, else device on a GPU, else torch; an explicit choice is checked.
    DALI is imported only when it may be used (its import takes a second or two)."""
    if kind not in LOADER_KINDS:
        raise UserError(f"unknown --loader {kind!r}: choose one of {', '.join(LOADER_KINDS)}")
    if kind == "dali":
        from fastgradmix.data.loaders.dali import require_dali

        require_dali()
    elif kind == "auto":
        from fastgradmix.data.loaders.dali import dali_available

        if dali_available():
            return "dali"
        return "device" if device.type == "cuda" else "torch"
    return kind


def build_input_pipeline(kind: str, data: OpenSetData, spec: AugmentSpec, batch_size: int, seed: int,
                         device: torch.device, *, workers: int = 2, rank: int = 0, world_size: int = 1,
                         amp_dtype: torch.dtype | None = None, channels_last: bool = False) -> InputPipeline:
    """The training loader over ``data``'s training images and the matching evaluation views.

    ``workers``: DALI threads or DataLoader processes. ``amp_dtype``/``channels_last``: the form DALI's GPU
    mode gives its views (the other loaders give float32; the training step converts).
    """
    asked, kind = kind, resolve_kind(kind, device)
    if kind == "dali" and not spec.crop:  # the DALI graph has no rotation view (yet)
        if asked == "dali":
            raise UserError("--loader dali makes cropped views only; --views rotate needs --loader torch or device")
        kind = "device" if device.type == "cuda" else "torch"
    require_steps(data.train_images.shape[0], batch_size, world_size)
    if kind == "dali":
        from fastgradmix.data.loaders.dali import DaliEvalPixels, DaliLoader

        train = DaliLoader(data.train_images, data.train_labels, spec, batch_size, seed, device, workers=workers,
                           rank=rank, world_size=world_size, files=data.train_files, amp_dtype=amp_dtype,
                           channels_last=channels_last)
        views = EvalViews(spec, device, DaliEvalPixels(spec, device, workers=workers, channels_last=channels_last))
    elif kind == "torch":
        from fastgradmix.data.loaders.torch_workers import TorchEvalPixels, TorchLoader

        train = TorchLoader(data.train_images, data.train_labels, spec, batch_size, seed, device, workers=workers,
                            rank=rank, world_size=world_size)
        views = EvalViews(spec, device, TorchEvalPixels(spec, device, workers=workers))
    else:
        train = DeviceResidentLoader(data.train_images, data.train_labels, spec, batch_size, seed, device,
                                     rank=rank, world_size=world_size)
        views = EvalViews(spec, device)
    return InputPipeline(kind, train, views)
