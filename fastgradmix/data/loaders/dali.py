"""NVIDIA DALI input pipelines: two independently augmented SimCLR views per image, and evaluation views.

Where the images come from:
- arrays (MNIST, SVHN, CIFAR pickles, digits: OpenSetData's uint8 tensors): ``fn.external_source`` in
  batch mode. Its callback returns a whole batch as one NumPy gather (``images[batch indices]``), so no
  Python runs per sample; DALI's thread pool does the augmentation. It is not ``parallel``: a gather
  takes microseconds per batch, and worker processes would only add start-up time and copies.
- files (TinyImageNet, ImageFolder, CIFAR as JPEG folders: ``OpenSetData.train_files``): ``fn.readers.file``
  over this rank's files of the epoch in the epoch's order (no reader shuffling, one shard: the order and
  the sharding are sharding.epoch_batches, as for every loader), decoded by ``fn.decoders.image``,
  "mixed" (nvJPEG) on a GPU.

The views (DESIGN.md section 2): ``random_resized_crop`` (area 0.2-1, aspect ratio 3/4-4/3, antialiased,
torchvision's ten attempts) -> colour jitter with p=0.8 and grayscale with p=0.2 as one ``color_twist``
per sample (a skipped jitter is the identity twist; grayscale is saturation 0 applied after the jitter,
the YIQ luma with torchvision's 0.299/0.587/0.114 weights) -> ``crop_mirror_normalize`` (the flip with
p=0.5 as its mirror, normalisation, layout, dtype). MNIST-like data (flip=False, color=False) get the
crop only. Deliberate differences from torchvision: contrast scales around mid-grey rather than the
image's mean grey, the hue turns in YIQ space (as augment.py does), the jitter order is fixed.

Randomness: each epoch builds a new pipeline seeded with mix_seed(seed, epoch, rank). DALI's operators
draw per sample from that seed whatever the number of threads, so the same seed gives the same batches
and a resumed run replays its epoch exactly (building a CPU pipeline takes milliseconds).

Modes: ``device_id=None`` (CPU only, no GPU needed) yields float32 host tensors; on a GPU every operator
after the source runs on the device and the views come out as channels_last (N, C, H, W) tensors on the
device in the AMP dtype (fp16 directly; bf16 as fp32 then one cast on the device: DALI has no bf16).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from fastgradmix.common.errors import UserError
from fastgradmix.data.augment import AugmentSpec
from fastgradmix.data.loaders.sharding import check_rank, epoch_batches, mix_seed, steps_per_epoch

try:
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali.pipeline import Pipeline
    from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

    _IMPORT_ERROR: ImportError | None = None
except ImportError as err:  # DALI is an optional extra
    _IMPORT_ERROR = err

INSTALL_HINT = ("--loader dali needs NVIDIA DALI, which is not installed: pip install 'fastgradmix[dali]' "
                "(or pip install nvidia-dali-cuda130), or choose --loader auto, torch or device")
PREFETCH = 2  # batches DALI prepares ahead while the training step runs


def dali_available() -> bool:
    return _IMPORT_ERROR is None


def require_dali() -> None:
    if _IMPORT_ERROR is not None:
        raise UserError(INSTALL_HINT)


def _to_hwc(images: torch.Tensor) -> np.ndarray:
    """uint8 (N, C, H, W) tensor -> (N, H, W, C) contiguous NumPy array, DALI's image layout."""
    return images.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def _device_id(device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    return device.index if device.index is not None else torch.cuda.current_device()


def _jitter_factor(apply, strength: float):
    """A per-sample factor drawn from [1 - strength, 1 + strength] where ``apply`` is 1, else 1."""
    drawn = fn.random.uniform(range=[max(0.0, 1.0 - strength), 1.0 + strength])
    return apply * drawn + (1.0 - apply)


def _colour(images, spec: AugmentSpec):
    """Colour jitter with probability jitter_p, then grayscale with probability grayscale_p, in one twist."""
    brightness, contrast, saturation, hue = spec.jitter
    apply = fn.cast(fn.random.coin_flip(probability=spec.jitter_p), dtype=types.FLOAT)
    grey = fn.cast(fn.random.coin_flip(probability=spec.grayscale_p), dtype=types.FLOAT)
    hue_degrees = apply * fn.random.uniform(range=[-360.0 * hue, 360.0 * hue])  # torchvision's hue is in turns
    return fn.color_twist(images, brightness=_jitter_factor(apply, brightness),
                          contrast=_jitter_factor(apply, contrast),
                          saturation=_jitter_factor(apply, saturation) * (1.0 - grey), hue=hue_degrees)


def _normalise(images, spec: AugmentSpec, layout: str, dtype, mirror=0):
    return fn.crop_mirror_normalize(images, mirror=mirror, mean=[255.0 * m for m in spec.mean],
                                    std=[255.0 * s for s in spec.std], output_layout=layout, dtype=dtype)


def _view(images, spec: AugmentSpec, channels: int, layout: str, dtype):
    """One SimCLR view of a batch of HWC uint8 images (a DALI graph node)."""
    views = fn.random_resized_crop(images, size=[spec.size, spec.size], random_area=list(spec.crop_scale),
                                   random_aspect_ratio=list(spec.crop_ratio), antialias=True)
    if spec.color and channels == 3:
        views = _colour(views, spec)
    mirror = fn.random.coin_flip(probability=0.5) if spec.flip else 0
    return _normalise(views, spec, layout, dtype, mirror)


class _Output:
    """How pipeline outputs become the tensors the training step takes."""

    def __init__(self, device: torch.device, amp_dtype: torch.dtype | None, channels_last: bool):
        self.on_gpu = device.type == "cuda"
        self.device = device
        # GPU mode: channels_last views in the AMP dtype; CPU mode: float32, channels_last only if asked
        self.layout = "HWC" if (self.on_gpu or channels_last) else "CHW"
        self.cast_to = amp_dtype if (self.on_gpu and amp_dtype == torch.bfloat16) else None
        self.dali_dtype = types.FLOAT16 if (self.on_gpu and amp_dtype == torch.float16) else types.FLOAT

    def views(self, batch: torch.Tensor) -> torch.Tensor:
        """A DALI output batch -> (N, C, H, W); channels_last strides when it came out as HWC."""
        if self.layout == "HWC":
            batch = batch.permute(0, 3, 1, 2)
        return batch if self.cast_to is None else batch.to(self.cast_to)

    def labels(self, labels: torch.Tensor) -> torch.Tensor:
        return labels.reshape(-1).to(torch.int64)


class DaliLoader:
    """Training batches (view1, view2, labels, indices) from a DALI pipeline, one pipeline per epoch (indices:
    the (B,) int64 host rows the pipeline was fed for that batch).

    ``files`` (one path per row of ``images``) switches to the file reader; otherwise the uint8 ``images``
    (N, C, H, W) are the source. ``workers`` is DALI's thread count.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, spec: AugmentSpec, batch_size: int, seed: int,
                 device: torch.device, *, workers: int = 2, rank: int = 0, world_size: int = 1,
                 files: list[str] | None = None, amp_dtype: torch.dtype | None = None, channels_last: bool = False):
        require_dali()
        check_rank(rank, world_size)
        if files is not None and len(files) != images.shape[0]:
            raise ValueError(f"{len(files)} files for {images.shape[0]} images")
        self.channels = images.shape[1]
        self.n = images.shape[0]
        self.images = None if files is not None else _to_hwc(images)  # (N, H, W, C) uint8
        self.labels = labels.cpu().numpy().astype(np.int64)
        self.files = files
        self.spec, self.batch_size, self.seed = spec, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.threads = max(1, workers)
        self.device = device
        self.output = _Output(device, amp_dtype, channels_last)
        self.steps_per_epoch = steps_per_epoch(self.n, batch_size, world_size)

    def describe(self) -> str:
        where = f"GPU {_device_id(self.device)}" if self.output.on_gpu else "CPU"
        source = "file reader" if self.files is not None else "external source"
        return f"dali ({where}, {source}, {self.threads} threads)"

    def _pipeline(self, epoch: int, batches: np.ndarray) -> Pipeline:
        pipe = Pipeline(batch_size=self.batch_size, num_threads=self.threads, device_id=_device_id(self.device),
                        seed=mix_seed(self.seed, epoch, self.rank) % 2**31, prefetch_queue_depth=PREFETCH)
        with pipe:
            if self.files is not None:
                rows = batches.reshape(-1)
                encoded, labels = fn.readers.file(files=[self.files[i] for i in rows.tolist()],
                                                  labels=self.labels[rows].tolist(), random_shuffle=False,
                                                  name="reader")
                images = fn.decoders.image(encoded, device="mixed" if self.output.on_gpu else "cpu",
                                           output_type=types.RGB if self.channels == 3 else types.GRAY)
            else:
                images, labels = fn.external_source(source=_BatchSource(self.images, self.labels, batches),
                                                    num_outputs=2, batch=True, layout=["HWC", ""],
                                                    dtype=[types.UINT8, types.INT64])
                if self.output.on_gpu:
                    images = images.gpu()
            pipe.set_outputs(_view(images, self.spec, self.channels, self.output.layout, self.output.dali_dtype),
                             _view(images, self.spec, self.channels, self.output.layout, self.output.dali_dtype),
                             labels)
        return pipe

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        batches = epoch_batches(self.n, self.batch_size, self.seed, epoch, self.rank, self.world_size)
        pipe = self._pipeline(epoch, batches)
        reader = {"reader_name": "reader"} if self.files is not None else {}
        outputs = DALIGenericIterator([pipe], ["view1", "view2", "labels"], last_batch_policy=LastBatchPolicy.DROP,
                                      auto_reset=False, **reader)
        try:
            # both sources read the rows of ``batches`` in order, one row per output batch
            for rows, out in zip(batches, outputs, strict=False):
                batch = out[0]
                yield (self.output.views(batch["view1"]), self.output.views(batch["view2"]),
                       self.output.labels(batch["labels"]), torch.from_numpy(rows))
        finally:
            del outputs, pipe  # the pipeline's threads and buffers go with it


class _BatchSource:
    """external_source callback: iteration i -> the i-th batch as one (B, H, W, C) gather and its labels."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, batches: np.ndarray):
        self.images, self.labels, self.batches = images, labels, batches  # batches: (steps, B) indices

    def __call__(self, iteration: int):
        if iteration >= self.batches.shape[0]:
            raise StopIteration  # the epoch's end (DALI asks ahead by its prefetch depth)
        rows = self.batches[iteration]
        return self.images[rows], self.labels[rows]


class _SliceSource:
    """external_source callback for evaluation: consecutive slices in stored order, the last one partial."""

    def __init__(self, images: np.ndarray, batch_size: int):
        self.images, self.batch_size = images, batch_size

    def __call__(self, iteration: int):
        start = iteration * self.batch_size
        if start >= self.images.shape[0]:
            raise StopIteration
        return self.images[start:start + self.batch_size]


class DaliEvalPixels:
    """Un-augmented evaluation batches in stored order: pixels resized (bilinear, antialiased) when the
    image side is not the run's, then normalised in torch by loaders.normalise_pixels like every loader's."""

    def __init__(self, spec: AugmentSpec, device: torch.device, *, workers: int = 2, channels_last: bool = False):
        require_dali()
        self.spec, self.device, self.threads = spec, device, max(1, workers)
        self.output = _Output(device, None, channels_last)  # fp32: evaluation runs without autocast

    def pixels(self, images: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
        """uint8 (N, C, H, W) -> float32 (B, C, size, size) batches in 0..255, every image once, in order."""
        if images.shape[0] == 0:
            return
        size = self.spec.size
        pipe = Pipeline(batch_size=batch_size, num_threads=self.threads, device_id=_device_id(self.device), seed=0,
                        prefetch_queue_depth=PREFETCH)
        with pipe:
            pixels = fn.external_source(source=_SliceSource(_to_hwc(images), batch_size), batch=True, layout="HWC",
                                        dtype=types.UINT8)
            if self.output.on_gpu:
                pixels = pixels.gpu()
            if tuple(images.shape[-2:]) != (size, size):
                pixels = fn.resize(pixels, size=[size, size], antialias=True, dtype=types.FLOAT)
            else:
                pixels = fn.cast(pixels, dtype=types.FLOAT)
            if self.output.layout == "CHW":
                pixels = fn.transpose(pixels, perm=[2, 0, 1])
            pipe.set_outputs(pixels)
        outputs = DALIGenericIterator([pipe], ["pixels"], last_batch_policy=LastBatchPolicy.PARTIAL, auto_reset=False)
        try:
            for out in outputs:
                yield self.output.views(out[0]["pixels"])
        finally:
            del outputs, pipe
