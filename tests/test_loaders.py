"""The input pipelines (data/loaders/: pipeline.py, dali.py, torch_workers.py, sharding.py) on CPU.

Every loader kind: shapes, dtypes and value ranges of the views; two views differ; the same seed gives the
same batches; ranks partition an epoch and every sample comes once (images tagged with their index in
their pixels); augmentation statistics measured from the pixels (crop area and aspect ratio with images
whose pixels encode their coordinates; flips; jitter and grayscale rates with constant-colour images)
against the recipe's expected values computed independently in NumPy; the MNIST-like flags switch flips
and colour off; evaluation views are un-augmented, in stored order, and equal a NumPy normalisation.
"dali-files" is the DALI file reader over PNG files (TinyImageNet/ImageFolder's path). DALI tests skip
without DALI.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from host_reads import ForbidHostReads

from fastgradmix.common.errors import UserError
from fastgradmix.data.augment import AugmentSpec
from fastgradmix.data.loaders.dali import dali_available
from fastgradmix.data.loaders.pipeline import build_input_pipeline, resolve_kind
from fastgradmix.data.loaders.sharding import epoch_batches
from fastgradmix.data.openset import OpenSetData

CPU = torch.device("cpu")
MEAN3, STD3 = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
needs_dali = pytest.mark.skipif(not dali_available(), reason="NVIDIA DALI is not installed")
KINDS = ["device", "torch", pytest.param("dali", marks=needs_dali),
         pytest.param("dali-files", marks=needs_dali)]
EVAL_KINDS = ["device", "torch", pytest.param("dali", marks=needs_dali)]


def make_data(images: np.ndarray, labels: np.ndarray, mean=MEAN3, std=STD3, flip=True, color=True,
              files_dir=None) -> OpenSetData:
    """An OpenSetData around uint8 (N, C, H, W) training images; with files_dir, also written there as PNGs."""
    files = None
    if files_dir is not None:
        from PIL import Image

        files_dir.mkdir(parents=True, exist_ok=True)
        files = []
        for index, image in enumerate(images):
            path = files_dir / f"{index:05d}.png"
            pixels_hwc = image.transpose(1, 2, 0)
            Image.fromarray(pixels_hwc[..., 0] if pixels_hwc.shape[2] == 1 else pixels_hwc).save(path)  # lossless
            files.append(str(path))
    train = torch.from_numpy(images)
    return OpenSetData(protocol="synthetic", split=0, train_images=train, train_labels=torch.from_numpy(labels),
                       test_images=train[:4], test_labels=torch.zeros(4, dtype=torch.int64), known_classes=["a"],
                       unknown_classes=[], mean=mean, std=std, flip=flip, color=color, train_files=files)


def png_dir(kind: str, tmp_path, name: str = "png"):
    """Where "dali-files" gets its PNG copies of the images (the other kinds read the arrays)."""
    return tmp_path / name if kind == "dali-files" else None


def pipeline(kind, data, size, batch_size, seed=0, rank=0, world_size=1, workers=0, device=CPU):
    if kind == "dali-files":
        assert data.train_files is not None
        kind = "dali"
    elif data.train_files is not None:
        data = replace(data, train_files=None)
    spec = AugmentSpec(size=size, mean=data.mean, std=data.std, flip=data.flip, color=data.color)
    # DALI needs at least one thread; the torch loader runs in-process with 0 workers (fast to start)
    workers = max(workers, 1) if kind == "dali" else workers
    return build_input_pipeline(kind, data, spec, batch_size, seed, device, workers=workers, rank=rank,
                                world_size=world_size)


def pixels(views: torch.Tensor, mean, std) -> np.ndarray:
    """Normalised views (B, C, H, W) -> their pixel values in 0..255 (float64)."""
    mean = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
    return ((views.cpu().double() * std + mean) * 255).numpy()


def tagged_images(n: int, channels: int, side: int) -> np.ndarray:
    """Image i is constant, its pixel value 20 + i in every channel (n <= 230): a tag any crop keeps."""
    values = (20 + np.arange(n)).astype(np.uint8)
    return np.broadcast_to(values[:, None, None, None], (n, channels, side, side)).copy()


def read_tags(view1: torch.Tensor, mean, std) -> np.ndarray:
    values = pixels(view1, mean, std)  # (B, C, H, W), constant per image
    assert np.abs(values - values[:, :1, :1, :1]).max() < 0.6, "a tagged image is no longer constant"
    return np.rint(values[:, 0, 0, 0]).astype(np.int64) - 20


def epoch_tags(loader, epoch, mean, std):
    tags, labels = [], []
    for view1, _, batch_labels, indices in loader.epoch(epoch):
        tags.append(read_tags(view1, mean, std))
        # the dataset rows the loader reports are the images its views were made from
        assert np.array_equal(indices.cpu().numpy(), tags[-1]) and indices.dtype == torch.int64
        labels.append(batch_labels.cpu().numpy())
    return np.concatenate(tags), np.concatenate(labels)


# ---- the sharding rule itself ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n,batch_size,world_size", [(100, 8, 1), (100, 8, 3), (96, 8, 2), (17, 4, 4)])
def test_epoch_batches_partition_the_epoch_across_ranks(n, batch_size, world_size):
    shards = [epoch_batches(n, batch_size, seed=3, epoch=1, rank=r, world_size=world_size) for r in range(world_size)]
    steps = n // (batch_size * world_size)
    assert all(s.shape == (steps, batch_size) and s.dtype == np.int64 for s in shards)
    union = np.concatenate([s.ravel() for s in shards])
    assert len(set(union.tolist())) == union.size == steps * batch_size * world_size  # disjoint, none twice
    assert union.min() >= 0 and union.max() < n
    assert n - union.size < batch_size * world_size  # only the last partial round of batches is dropped
    again = epoch_batches(n, batch_size, seed=3, epoch=1, rank=0, world_size=world_size)
    assert np.array_equal(again, shards[0])
    if steps:
        assert not np.array_equal(epoch_batches(n, batch_size, seed=3, epoch=2, rank=0, world_size=world_size),
                                  shards[0])


# ---- every loader ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_views_shapes_dtypes_ranges_and_two_views_differ(kind, tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 3, 40, 40), dtype=np.uint8)
    labels = rng.integers(0, 5, 24)
    data = make_data(images, labels, files_dir=png_dir(kind, tmp_path))
    loader = pipeline(kind, data, size=24, batch_size=8).train
    assert loader.steps_per_epoch == 3
    batches = list(loader.epoch(0))
    assert len(batches) == 3
    for view1, view2, batch_labels, _ in batches:
        for view in (view1, view2):
            assert view.shape == (8, 3, 24, 24) and view.dtype == torch.float32
            values = pixels(view, MEAN3, STD3)
            assert values.min() > -0.5 and values.max() < 255.5  # normalised [0, 255] pixels
            assert values.std() > 10  # real image content, not a constant
        assert batch_labels.shape == (8,) and batch_labels.dtype == torch.int64
        assert (view1 - view2).abs().mean() > 0.05  # independently augmented
        assert set(batch_labels.tolist()) <= set(labels.tolist())


@pytest.mark.parametrize("kind", KINDS)
def test_one_channel_digit_like_views(kind, tmp_path):
    images = tagged_images(20, 1, 16)  # "dali-files" decodes their PNGs as one-channel images
    data = make_data(images, np.arange(20) % 3, mean=(0.5,), std=(0.5,), flip=False, color=False,
                     files_dir=png_dir(kind, tmp_path))
    view1, view2, batch_labels, _ = next(iter(pipeline(kind, data, size=12, batch_size=10).train.epoch(0)))
    assert view1.shape == view2.shape == (10, 1, 12, 12)
    tags = read_tags(view1, (0.5,), (0.5,))
    assert np.array_equal(batch_labels.numpy(), tags % 3)


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_batches_other_seed_or_epoch_not(kind, tmp_path):
    rng = np.random.default_rng(1)
    data = make_data(rng.integers(0, 256, (32, 3, 20, 20), dtype=np.uint8), np.arange(32),  # label = index
                     files_dir=png_dir(kind, tmp_path))

    def first_epochs(seed):
        loader = pipeline(kind, data, size=16, batch_size=8, seed=seed).train  # a fresh loader each time
        return [[t.clone() for t in batch] for epoch in (0, 1) for batch in loader.epoch(epoch)]

    a, b, other_seed = first_epochs(7), first_epochs(7), first_epochs(8)
    for batch_a, batch_b in zip(a, b, strict=True):
        for x, y in zip(batch_a, batch_b, strict=True):
            assert torch.equal(x, y)
    assert not torch.equal(a[0][0], other_seed[0][0])
    # every image is augmented afresh each epoch: its view in epoch 1 is not its view in epoch 0
    by_epoch = [{int(label): view for view1, _, labels, _ in a[4 * e:4 * e + 4]
                 for label, view in zip(labels, view1, strict=True)} for e in (0, 1)]
    assert by_epoch[0].keys() == by_epoch[1].keys() == set(range(32))
    assert all(not torch.equal(by_epoch[0][i], by_epoch[1][i]) for i in range(32))


def test_torch_loader_batches_do_not_depend_on_the_worker_count():
    rng = np.random.default_rng(2)
    data = make_data(rng.integers(0, 256, (24, 3, 20, 20), dtype=np.uint8), rng.integers(0, 3, 24))
    in_process = [b for b in pipeline("torch", data, 16, 8, seed=5, workers=0).train.epoch(3)]
    two_workers = [b for b in pipeline("torch", data, 16, 8, seed=5, workers=2).train.epoch(3)]
    for batch_a, batch_b in zip(in_process, two_workers, strict=True):
        for x, y in zip(batch_a, batch_b, strict=True):
            assert torch.equal(x, y)


@pytest.mark.parametrize("kind", KINDS)
def test_ranks_partition_the_epoch_and_every_sample_comes_once(kind, tmp_path):
    n, batch_size = 100, 8
    data = make_data(tagged_images(n, 3, 12), np.arange(n) % 7, flip=True, color=False,
                     files_dir=png_dir(kind, tmp_path))
    for epoch in (0, 1):
        per_rank = []
        for rank in (0, 1):  # a world of two ranks, simulated in one process
            loader = pipeline(kind, data, size=8, batch_size=batch_size, rank=rank, world_size=2).train
            assert loader.steps_per_epoch == n // (batch_size * 2)
            tags, labels = epoch_tags(loader, epoch, MEAN3, STD3)
            assert np.array_equal(labels, tags % 7)  # images and labels stay together
            assert len(set(tags.tolist())) == tags.size  # nothing twice on a rank
            per_rank.append(set(tags.tolist()))
        assert not per_rank[0] & per_rank[1]  # disjoint shards
        union = per_rank[0] | per_rank[1]
        assert len(union) == 96 and union <= set(range(n))  # all but the last partial round of batches

    # one rank, a multiple of the batch size: every sample exactly once per epoch
    data96 = make_data(tagged_images(96, 3, 12), np.arange(96) % 7, color=False,
                       files_dir=png_dir(kind, tmp_path, "png96"))
    tags, _ = epoch_tags(pipeline(kind, data96, size=8, batch_size=batch_size).train, 0, MEAN3, STD3)
    assert sorted(tags.tolist()) == list(range(96))


@needs_dali
def test_dali_channels_last_views_hold_the_same_values():
    """The HWC output path (GPU mode's layout, or --channels-last) against the CHW one, same seed."""
    rng = np.random.default_rng(7)
    data = make_data(rng.integers(0, 256, (16, 3, 20, 20), dtype=np.uint8), np.arange(16))
    spec = AugmentSpec(size=16, mean=MEAN3, std=STD3)
    planar, channels_last = (next(iter(build_input_pipeline("dali", data, spec, 8, 1, CPU, workers=1,
                                                            channels_last=layout).train.epoch(0)))
                             for layout in (False, True))
    assert channels_last[0].is_contiguous(memory_format=torch.channels_last)
    assert not planar[0].is_contiguous(memory_format=torch.channels_last)
    for x, y in zip(planar, channels_last, strict=True):
        assert torch.equal(x, y)


def test_device_loader_reads_nothing_back_to_the_host_within_an_epoch():
    rng = np.random.default_rng(5)
    data = make_data(rng.integers(0, 256, (40, 3, 20, 20), dtype=np.uint8), rng.integers(0, 3, 40))
    batches = pipeline("device", data, size=16, batch_size=8).train.epoch(0)
    next(batches)  # the epoch's index table goes to the device once, at the first batch
    with ForbidHostReads():
        assert sum(1 for _ in batches) == 4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_loader_on_the_gpu_partitions_reproduces_and_never_syncs():
    cuda = torch.device("cuda")
    n, batch_size = 100, 8
    data = make_data(tagged_images(n, 3, 12), np.arange(n) % 7, color=False)
    shards = []
    for rank in (0, 1):
        tags, labels = epoch_tags(pipeline("device", data, 8, batch_size, rank=rank, world_size=2, device=cuda).train,
                                  0, MEAN3, STD3)
        assert np.array_equal(labels, tags % 7)
        shards.append(set(tags.tolist()))
    assert not shards[0] & shards[1] and len(shards[0] | shards[1]) == 96
    colour = make_data(np.random.default_rng(6).integers(0, 256, (64, 3, 16, 16), dtype=np.uint8),
                       np.zeros(64, dtype=np.int64))
    runs = []
    for _ in range(2):
        batches = pipeline("device", colour, 16, 16, seed=3, device=cuda).train.epoch(2)
        first = next(batches)
        torch.cuda.set_sync_debug_mode("error")  # any synchronising call from here on raises
        try:
            runs.append([first] + list(batches))
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert runs[0][0][0].device.type == "cuda"
    for batch_a, batch_b in zip(*runs, strict=True):
        for x, y in zip(batch_a, batch_b, strict=True):
            assert torch.equal(x, y)


# ---- augmentation statistics against the recipe -----------------------------------------------------------------

def expected_crop_statistics(side: int, draws: int = 400_000) -> tuple[float, float]:
    """Mean area fraction and mean |log aspect ratio| of torchvision's RandomResizedCrop(scale=(0.2, 1)) on a
    square image, by simulation in NumPy: ten attempts with integer sides, the first that fits, else the whole."""
    rng = np.random.default_rng(0)
    area = rng.uniform(0.2, 1.0, (draws, 10)) * side * side
    log_ratio = rng.uniform(math.log(3 / 4), math.log(4 / 3), (draws, 10))
    w = np.rint(np.sqrt(area * np.exp(log_ratio)))
    h = np.rint(np.sqrt(area / np.exp(log_ratio)))
    fits = (w <= side) & (h <= side)
    first = fits.argmax(axis=1)
    rows = np.arange(draws)
    w = np.where(fits.any(axis=1), w[rows, first], side)
    h = np.where(fits.any(axis=1), h[rows, first], side)
    return float((w * h).mean() / side**2), float(np.abs(np.log(w / h)).mean())


def coordinate_images(n: int, side: int) -> np.ndarray:
    """Red = 4x + 2 and green = 4y + 2 at column x, row y (side 64: 2..254); blue constant 128."""
    ramp = 4 * np.arange(side) + 2
    image = np.stack([np.broadcast_to(ramp[None, :], (side, side)), np.broadcast_to(ramp[:, None], (side, side)),
                      np.full((side, side), 128)]).astype(np.uint8)
    return np.broadcast_to(image, (n, 3, side, side)).copy()


def all_views(loader, epochs) -> torch.Tensor:
    return torch.cat([torch.cat([v1, v2]) for e in range(epochs) for v1, v2, _, _ in loader.epoch(e)])


@pytest.mark.parametrize("kind", KINDS)
def test_crop_area_aspect_and_flip_rate_follow_the_recipe(kind, tmp_path):
    side, size = 64, 32
    data = make_data(coordinate_images(128, side), np.zeros(128, dtype=np.int64), color=False,
                     files_dir=png_dir(kind, tmp_path))
    values = pixels(all_views(pipeline(kind, data, size=size, batch_size=64, seed=11).train, 4), MEAN3, STD3)
    # first to last output pixel centre spans (size - 1) / size of the crop: 4 levels per input pixel
    span_x = (values[:, 0, :, -1] - values[:, 0, :, 0]).mean(axis=1)  # (V,) negative when flipped
    span_y = (values[:, 1, -1, :] - values[:, 1, 0, :]).mean(axis=1)
    crop_w = np.abs(span_x) / 4 * size / (size - 1) / side  # fractions of the image side
    crop_h = span_y / 4 * size / (size - 1) / side
    area, aspect = expected_crop_statistics(side)
    n = values.shape[0]  # 1024 views; the area's standard deviation is about 0.2, its mean's 0.006
    assert abs((crop_w * crop_h).mean() - area) < 0.03, (crop_w * crop_h).mean()
    assert abs(np.abs(np.log(crop_w / crop_h)).mean() - aspect) < 0.03
    assert abs((span_x < 0).mean() - 0.5) < 4 * 0.5 / math.sqrt(n)  # flips with p = 0.5
    assert np.all(crop_h > 0)  # never turned upside down


@pytest.mark.parametrize("kind", KINDS)
def test_jitter_and_grayscale_rates_follow_the_recipe(kind, tmp_path):
    colour = np.array([60, 120, 200], dtype=np.uint8)
    images = np.broadcast_to(colour[None, :, None, None], (128, 3, 8, 8)).copy()
    data = make_data(images, np.zeros(128, dtype=np.int64), files_dir=png_dir(kind, tmp_path))
    values = pixels(all_views(pipeline(kind, data, size=8, batch_size=64, seed=4).train, 4), MEAN3, STD3)
    per_view = values.mean(axis=(2, 3))  # (V, 3): the images stay constant, so one colour per view
    n = per_view.shape[0]
    grey = np.ptp(per_view, axis=1) < 1.0
    untouched = np.abs(per_view - colour).max(axis=1) < 1.0
    tolerance = 4 * 0.5 / math.sqrt(n)  # four standard errors at worst
    assert abs(grey.mean() - 0.2) < tolerance, grey.mean()
    assert abs(untouched.mean() - (1 - 0.8) * (1 - 0.2)) < tolerance, untouched.mean()


@pytest.mark.parametrize("kind", KINDS)
def test_mnist_like_flags_switch_flips_and_colour_off(kind, tmp_path):
    side = 32
    images = coordinate_images(64, side)
    data = make_data(images, np.zeros(64, dtype=np.int64), flip=False, color=False,
                     files_dir=png_dir(kind, tmp_path))
    values = pixels(all_views(pipeline(kind, data, size=16, batch_size=32).train, 2), MEAN3, STD3)
    assert np.all(values[:, 0, :, -1] > values[:, 0, :, 0])  # red grows to the right: nothing flipped
    assert np.all(values[:, 1, -1, :] > values[:, 1, 0, :])
    assert np.abs(values[:, 2] - 128).max() < 0.6  # the constant blue channel: no colour op touched it


# ---- evaluation views ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", EVAL_KINDS)
def test_eval_views_are_unaugmented_in_order_with_a_partial_last_batch(kind):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (50, 3, 16, 16), dtype=np.uint8)
    data = make_data(images, np.zeros(50, dtype=np.int64))
    views = pipeline(kind, data, size=16, batch_size=8).eval
    batches = list(views.batches(torch.from_numpy(images), 16))
    assert [b.shape[0] for b in batches] == [16, 16, 16, 2]
    expected = (images / np.float32(255) - np.array(MEAN3, np.float32)[:, None, None]) / \
        np.array(STD3, np.float32)[:, None, None]
    np.testing.assert_allclose(torch.cat(batches).numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("kind", EVAL_KINDS)
def test_eval_views_resize_like_antialiased_bilinear(kind):
    Image = pytest.importorskip("PIL.Image")  # the reference resize
    side, size = 48, 32
    rng = np.random.default_rng(4)
    smooth = torch.nn.functional.interpolate(torch.from_numpy(rng.random((10, 3, 6, 6), dtype=np.float32)),
                                             size=(side, side), mode="bicubic", align_corners=False)
    images = (smooth.clamp(0, 1) * 255).round().to(torch.uint8)
    data = make_data(images.numpy(), np.zeros(10, dtype=np.int64))
    got = torch.cat(list(pipeline(kind, data, size=size, batch_size=8).eval.batches(images, 4)))
    reference = torch.from_numpy(np.stack([np.asarray(Image.fromarray(img.permute(1, 2, 0).numpy()).resize(
        (size, size), Image.BILINEAR)) for img in images])).permute(0, 3, 1, 2).double()  # PIL: antialiased
    assert np.abs(pixels(got, MEAN3, STD3) - reference.numpy()).mean() < 1.0  # mean error under one grey level


# ---- choosing a loader --------------------------------------------------------------------------------------------

def test_auto_and_the_missing_dali_message(monkeypatch):
    import fastgradmix.data.loaders.dali as dali_module

    if dali_available():
        assert resolve_kind("auto", CPU) == "dali"
    monkeypatch.setattr(dali_module, "_IMPORT_ERROR", ImportError("No module named 'nvidia.dali'"))
    assert resolve_kind("auto", CPU) == "torch"
    assert resolve_kind("auto", torch.device("cuda")) == "device"
    with pytest.raises(UserError) as err:
        resolve_kind("dali", CPU)
    message = str(err.value)
    assert "\n" not in message and "pip install" in message and "nvidia-dali" in message


def test_batch_larger_than_a_rank_shard_is_a_user_error():
    data = make_data(tagged_images(20, 3, 8), np.zeros(20, dtype=np.int64))
    with pytest.raises(UserError, match="exceeds the 20 training images"):
        pipeline("device", data, size=8, batch_size=16, world_size=2)
