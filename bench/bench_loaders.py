"""Images/s of two-view augmentation per input pipeline, against the torchvision DataLoader (issue 5).

Per image size (32 px: CIFAR-like, 64 px: TinyImageNet-like), one group of rows measured in one run on
the same synthetic uint8 dataset (random pixels; the cost does not depend on the content), batch 256,
views at the dataset's size:

- ``torchvision_dataloader`` (baseline): what one writes without this package: a Dataset applying a
  ``v2.Compose`` of the recipe (RandomResizedCrop 0.2-1, flip, ColorJitter p=0.8, RandomGrayscale 0.2,
  ToDtype, Normalize) twice per sample, ``DataLoader(shuffle=True, drop_last=True, num_workers=W,
  persistent_workers=True)`` (pinned memory on a GPU);
- ``torch``: fastgradmix's torch fallback (the same transforms, seeded per sample, persistent workers);
- ``dali``: fastgradmix's DALI pipeline with W threads: CPU-only (device_id=None) on a CPU, GPU mode on a
  GPU; skipped where DALI is not installed;
- ``device``: the device-resident loader (dataset on the device, batched tensor ops; torch's threads on CPU).

One round = one epoch of N/256 batches, each moved to the bench device (as the training step does), then a
sync; "ms/call" is per batch and the speed-up is the ratio of images/s. W = FGM_BENCH_WORKERS (default 2,
the cores of the CPU machine). The last test prints the images/s table and, on CPU, checks the issue's
target: DALI >= 4x the torchvision DataLoader at 32 px.
"""

from __future__ import annotations

import os
import time

import pytest
import torch
from benchlib import DEVICE, ON_GPU, record, sync

from fastgradmix.data.augment import AugmentSpec
from fastgradmix.data.loaders.dali import dali_available
from fastgradmix.data.openset import OpenSetData

WORKERS = int(os.environ.get("FGM_BENCH_WORKERS", "2"))
BATCH = 256
N_IMAGES = 4096 if ON_GPU else 2048  # per round: 16 (GPU) or 8 (CPU) batches
ROUNDS = 3  # after one warm-up round (worker start, first pipeline build)
SIZES = (32, 64)
KINDS = ("torchvision_dataloader", "torch", "dali", "device")
IMAGES_PER_S: dict[tuple[int, str], float] = {}


def _spec(size: int) -> AugmentSpec:
    return AugmentSpec(size=size, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))


def _data(size: int) -> OpenSetData:
    generator = torch.Generator().manual_seed(size)
    images = torch.randint(0, 256, (N_IMAGES, 3, size, size), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (N_IMAGES,), generator=generator)
    return OpenSetData(protocol="bench", split=0, train_images=images, train_labels=labels, test_images=images[:1],
                       test_labels=labels[:1], known_classes=[str(c) for c in range(10)], unknown_classes=[],
                       mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))


class _PlainTwoViews(torch.utils.data.Dataset):
    """The baseline's Dataset: the recipe as a torchvision v2 Compose, applied twice per sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, spec: AugmentSpec):
        from torchvision.transforms import v2

        self.images, self.labels = images, labels
        self.transform = v2.Compose([
            v2.RandomResizedCrop(spec.size, scale=(0.2, 1.0), antialias=True), v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), v2.RandomGrayscale(0.2),
            v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(spec.mean), list(spec.std))])

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int):
        image = self.images[index]
        return self.transform(image), self.transform(image), self.labels[index]


def _epochs(kind: str, size: int):
    """A function that runs one epoch of ``kind``'s loader, every batch moved to the bench device."""
    data, spec = _data(size), _spec(size)
    if kind == "torchvision_dataloader":
        pytest.importorskip("torchvision")
        loader = torch.utils.data.DataLoader(_PlainTwoViews(data.train_images, data.train_labels, spec),
                                             batch_size=BATCH, shuffle=True, drop_last=True, num_workers=WORKERS,
                                             persistent_workers=WORKERS > 0, pin_memory=ON_GPU)
        batches = lambda epoch: loader  # noqa: E731
    else:
        if kind == "dali" and not dali_available():
            pytest.skip("NVIDIA DALI is not installed here")
        if kind == "torch":
            pytest.importorskip("torchvision")
        from fastgradmix.data.loaders.pipeline import build_input_pipeline

        pipeline = build_input_pipeline(kind, data, spec, BATCH, seed=0, device=DEVICE, workers=WORKERS)
        batches = pipeline.train.epoch

    epoch_counter = iter(range(10**6))

    def one_epoch():
        for view1, view2, labels, _ in batches(next(epoch_counter)):
            view1, view2, labels = (t.to(DEVICE, non_blocking=True) for t in (view1, view2, labels))
        sync()

    return one_epoch


def _run(benchmark, kind: str, size: int) -> None:
    one_epoch = _epochs(kind, size)
    times = []

    def timed_epoch():
        start = time.perf_counter()
        one_epoch()
        times.append(time.perf_counter() - start)

    steps = N_IMAGES // BATCH
    benchmark.group = f"two-view loaders b{BATCH} {size}px, {WORKERS} workers"
    record(benchmark, "baseline" if kind == "torchvision_dataloader" else "candidate", kind, steps, batch=BATCH,
           size=size, workers=WORKERS, images_per_round=steps * BATCH)
    benchmark.pedantic(timed_epoch, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    rate = steps * BATCH / min(times[1:] or times)  # the warm-up round (worker start, first build) left out
    IMAGES_PER_S[(size, kind)] = rate
    benchmark.extra_info.update(images_per_s=rate, note=f"{rate:.0f} images/s (two views each)")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", SIZES)
def test_loader_throughput(benchmark, size, kind):
    _run(benchmark, kind, size)


def test_report_ratios_and_the_cpu_target():
    """Prints images/s and the ratio to the torchvision DataLoader; on CPU checks DALI >= 4x at 32 px."""
    if not IMAGES_PER_S:
        pytest.skip("no loader benchmark ran in this session")
    print(f"\ntwo-view images/s on {DEVICE} ({'GPU' if ON_GPU else f'{WORKERS} workers'}), ratio to torchvision:")
    for size in SIZES:
        baseline = IMAGES_PER_S.get((size, "torchvision_dataloader"))
        for kind in KINDS:
            rate = IMAGES_PER_S.get((size, kind))
            if rate is not None:
                ratio = f"{rate / baseline:.2f}x" if baseline else "n/a"
                print(f"  {size} px  {kind:<24} {rate:>9.0f} images/s  {ratio}")
    dali, baseline = IMAGES_PER_S.get((32, "dali")), IMAGES_PER_S.get((32, "torchvision_dataloader"))
    if ON_GPU or dali is None or baseline is None:
        pytest.skip("the 4x target is for DALI CPU-only against the DataLoader on the same cores")
    assert dali / baseline >= 4.0, f"DALI CPU is only {dali / baseline:.2f}x the torchvision DataLoader at 32 px"
