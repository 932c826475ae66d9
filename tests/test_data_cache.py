"""The decoded-image cache: the second run decodes nothing; a changed source is decoded again."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from dataset_writers import CIFAR10_NAMES, class_colour, write_class_folders, write_image

import fastgradmix.data.readers.cache as cache
from fastgradmix.data.protocols import build_protocol
from fastgradmix.data.readers.cache import CACHE_FOLDER


@pytest.fixture
def decoded_files(monkeypatch):
    """Records every file handed to the decoder."""
    seen: list = []
    real = cache.decode_files

    def spy(files, *args, **kwargs):
        seen.extend(files)
        return real(files, *args, **kwargs)

    monkeypatch.setattr(cache, "decode_files", spy)
    return seen


@pytest.fixture
def jpeg_cifar(tmp_path):
    for part in ("train", "test"):
        write_class_folders(tmp_path / "cifar10-jpeg" / part, CIFAR10_NAMES, 2, ext=".png")
    return tmp_path


def _build(root):
    return build_protocol("cifar10", 0, 32, root, progress=False)


def test_second_run_decodes_nothing_and_gives_the_same_arrays(jpeg_cifar, decoded_files):
    first = _build(jpeg_cifar)
    # split 0: the 6 known classes' training folders (12 files) and all 10 test folders (20 files)
    assert len(decoded_files) == 12 + 20
    decoded_files.clear()
    second = _build(jpeg_cifar)
    assert decoded_files == []
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    assert first.train_files == second.train_files
    stored = sorted(p.name for p in (jpeg_cifar / CACHE_FOLDER).iterdir())
    assert len(stored) == 16 and all(name.endswith(".npz") for name in stored)  # 6 + 10 class groups, no temp files


@pytest.mark.parametrize("change", ["rewrite", "add", "remove", "touch"])
def test_a_changed_source_is_decoded_again(jpeg_cifar, decoded_files, change):
    _build(jpeg_cifar)
    decoded_files.clear()
    folder = jpeg_cifar / "cifar10-jpeg" / "train" / "truck"  # class 9, known in split 0
    if change == "rewrite":
        write_image(folder / "0000.png", 3, 7, size=8, fmt="PNG")  # now shows class 3's colour
    elif change == "add":
        write_image(folder / "0002.png", 9, 2, size=8, fmt="PNG")
    elif change == "remove":
        (folder / "0001.png").unlink()
    else:
        stat = (folder / "0000.png").stat()
        os.utime(folder / "0000.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    data = _build(jpeg_cifar)
    assert "truck" in data.known_classes  # split 0 knows classes 0, 6, 4, 9, 1, 7
    assert {f.parent.name for f in decoded_files} == {"truck"}  # only the changed group is decoded again
    rows = [i for i, f in enumerate(data.train_files) if "/truck/" in f]
    assert len(rows) == {"rewrite": 2, "add": 3, "remove": 1, "touch": 2}[change]
    if change == "rewrite":
        first = data.train_files.index(str(folder / "0000.png"))
        assert tuple(data.train_images[first, :, 0, 0].tolist()) == class_colour(3, 7)
    stale = [p for p in (jpeg_cifar / CACHE_FOLDER).iterdir() if p.name.startswith("cifar10-jpeg-train-truck--")]
    assert len(stale) == 1  # the old version was replaced, not kept beside the new one


def test_an_unreadable_cache_file_is_rebuilt(jpeg_cifar, decoded_files):
    _build(jpeg_cifar)
    for path in (jpeg_cifar / CACHE_FOLDER).iterdir():
        path.write_bytes(b"garbage")
    decoded_files.clear()
    data = _build(jpeg_cifar)
    assert len(decoded_files) == 32 and data.train_images.shape[0] == 12


def test_cache_key_covers_the_resize(tmp_path, decoded_files):
    for part in ("train", "test"):
        write_class_folders(tmp_path / part, ["a", "b"], 2, ext=".png", size=20)
    small = build_protocol("imagefolder", 0, 8, tmp_path, known_classes="a", progress=False)
    decoded_files.clear()
    large = build_protocol("imagefolder", 0, 16, tmp_path, known_classes="a", progress=False)
    assert len(decoded_files) == 6 and small.train_images.shape[-1] == 8 and large.train_images.shape[-1] == 16


def test_no_cache_when_disabled(jpeg_cifar, decoded_files):
    build_protocol("cifar10", 0, 32, jpeg_cifar, progress=False, cache=False)
    build_protocol("cifar10", 0, 32, jpeg_cifar, progress=False, cache=False)
    assert len(decoded_files) == 64 and not (jpeg_cifar / CACHE_FOLDER).exists()


def test_decoded_pixels_equal_pil(jpeg_cifar):
    from PIL import Image

    data = _build(jpeg_cifar)
    for row in (0, 5, len(data.train_files) - 1):
        with Image.open(data.train_files[row]) as image:
            expected = np.asarray(image.convert("RGB")).transpose(2, 0, 1)
        assert np.array_equal(data.train_images[row].numpy(), expected)
