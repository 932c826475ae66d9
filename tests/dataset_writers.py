"""Tiny datasets written in each dataset's exact on-disk format, for the reader and protocol tests.

Written independently of the readers (struct-packed idx headers, scipy.io.savemat, pickle, PIL), so a
reader that misreads a format disagrees with the ground truth these functions return. Every image
encodes its class and its index in its pixels:

- array formats (idx, .mat, pickles): pixel (row 0, col 0) of channel 0 = class, of the last channel =
  sample index within the class; the rest is random noise;
- image files (JPEG/PNG): a solid colour, red = 16 (c % 16) + 8, green = 16 (c // 16) + 8, blue =
  16 i + 8, robust to JPEG's small colour errors (:func:`class_of_pixels` decodes it).
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_NAMES = [f"fine{c:02d}" for c in range(100)]


def array_images(labels: np.ndarray, channels: int, size: int, seed: int) -> np.ndarray:
    """uint8 (N, C, size, size) noise with the class and the within-class index in pixel (0, 0)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(len(labels), channels, size, size), dtype=np.uint8)
    images[:, 0, 0, 0] = labels
    within = np.zeros(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        within[labels == c] = np.arange(int((labels == c).sum()))
    images[:, -1, 0, 0] = within if channels > 1 else images[:, -1, 0, 0]
    return images


def interleaved_labels(n_classes: int, per_class: int, seed: int) -> np.ndarray:
    """per_class images of each class in a shuffled order (real files are not sorted by class)."""
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(n_classes), per_class))


# ---- MNIST idx ----

def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder: Path, split: dict, gz: bool) -> None:
    """split: {"train": (images (N,1,28,28), labels), "test": ...} -> torchvision's raw/ idx files."""
    folder.mkdir(parents=True, exist_ok=True)
    for part, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = split[part]
        for name, array in ((f"{prefix}-images-idx3-ubyte", images[:, 0]), (f"{prefix}-labels-idx1-ubyte", labels)):
            blob = _idx_bytes(array)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(blob))
            else:
                (folder / name).write_bytes(blob)


# ---- SVHN .mat ----

def write_svhn(folder: Path, part: str, images: np.ndarray, labels: np.ndarray) -> None:
    """images (N, 3, 32, 32), digit labels -> {part}_32x32.mat with X (32, 32, 3, N), y (N, 1), 0 stored as 10."""
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    stored = np.where(labels == 0, 10, labels).astype(np.uint8).reshape(-1, 1)
    savemat(folder / f"{part}_32x32.mat", {"X": np.ascontiguousarray(images.transpose(2, 3, 1, 0)), "y": stored})


# ---- CIFAR python pickles ----

def _pickle(path: Path, value, protocol: int) -> None:
    with open(path, "wb") as handle:
        pickle.dump(value, handle, protocol=protocol)


def write_cifar10_pickles(folder: Path, split: dict, protocol: int = 2) -> None:
    """cifar-10-batches-py: data_batch_1..5 (train split in five parts), test_batch, batches.meta."""
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = split["train"]
    for index, part in enumerate(np.array_split(np.arange(len(labels)), 5), start=1):
        _pickle(folder / f"data_batch_{index}", {
            b"batch_label": f"training batch {index} of 5".encode(), b"labels": labels[part].tolist(),
            b"data": images[part].reshape(len(part), -1), b"filenames": [b"x.png"] * len(part)}, protocol)
    images, labels = split["test"]
    _pickle(folder / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": labels.tolist(),
                                    b"data": images.reshape(len(labels), -1)}, protocol)
    _pickle(folder / "batches.meta", {b"label_names": [name.encode() for name in CIFAR10_NAMES],
                                      b"num_cases_per_batch": 10000, b"num_vis": 3072}, protocol)


def write_cifar100_pickles(folder: Path, split: dict, protocol: int = 2) -> None:
    """cifar-100-python: train, test (b'fine_labels', b'coarse_labels', b'data'), meta."""
    folder.mkdir(parents=True, exist_ok=True)
    for part in ("train", "test"):
        images, labels = split[part]
        _pickle(folder / part, {b"filenames": [b"x.png"] * len(labels), b"batch_label": part.encode(),
                                b"fine_labels": labels.tolist(), b"coarse_labels": (labels // 5).tolist(),
                                b"data": images.reshape(len(labels), -1)}, protocol)
    _pickle(folder / "meta", {b"fine_label_names": [name.encode() for name in CIFAR100_NAMES],
                              b"coarse_label_names": [f"coarse{c}".encode() for c in range(20)]}, protocol)


# ---- image files ----

def class_colour(c: int, i: int) -> tuple[int, int, int]:
    return 16 * (c % 16) + 8, 16 * (c // 16) + 8, 16 * (i % 16) + 8


def class_of_pixels(images) -> np.ndarray:
    """Decodes the class of solid-colour images (N, 3, H, W) written by :func:`write_image`."""
    pixels = np.asarray(images)[:, :, 0, 0].astype(np.int64)
    return pixels[:, 0] // 16 + 16 * (pixels[:, 1] // 16)


def write_image(path: Path, c: int, i: int, size: int = 8, fmt: str | None = None) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.empty((size, size, 3), dtype=np.uint8)
    pixels[...] = class_colour(c, i)
    Image.fromarray(pixels).save(path, format=fmt, quality=95) if fmt == "JPEG" else \
        Image.fromarray(pixels).save(path, format=fmt)


def write_class_folders(split_dir: Path, names: list[str], per_class: int, ext: str = ".jpg",
                        size: int = 8) -> None:
    fmt = "JPEG" if ext.lower() in (".jpg", ".jpeg") else "PNG"
    for c, name in enumerate(names):
        for i in range(per_class):
            write_image(split_dir / name / f"{i:04d}{ext}", c, i, size, fmt)


def tiny_wnids(n: int = 200) -> list[str]:
    """Made-up wnids; their sorted order defines the class index."""
    return [f"n{(7919 * k) % 100000:08d}" for k in range(n)]


def write_tinyimagenet(root: Path, train_classes: list[int], train_per_class: int = 3,
                       val_per_class: int = 2, size: int = 8) -> list[str]:
    """tiny-imagenet-200 layout; returns the wnids in class-index (sorted) order.

    wnids.txt is written unsorted (as the official file is) and val_annotations.txt lists the
    validation images in an order unrelated to their classes.
    """
    folder = root / "tiny-imagenet-200"
    wnids = tiny_wnids()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (folder / "words.txt").write_text("".join(f"{w}\tthing {w}\n" for w in wnids))
    by_index = sorted(wnids)
    for c in train_classes:
        wnid = by_index[c]
        for i in range(train_per_class):
            write_image(folder / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", c, i, size, "JPEG")
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    order = np.random.default_rng(0).permutation(len(wnids) * val_per_class)
    lines = []
    for number, slot in enumerate(order):
        c, i = divmod(int(slot), val_per_class)
        write_image(folder / "val" / "images" / f"val_{number}.JPEG", c, i, size, "JPEG")
        lines.append(f"val_{number}.JPEG\t{by_index[c]}\t0\t0\t{size - 1}\t{size - 1}")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return by_index


# ---- everything at once ----

def array_split(n_classes: int, train_per_class: int, test_per_class: int, channels: int, size: int,
                seed: int) -> dict:
    train_labels = interleaved_labels(n_classes, train_per_class, seed)
    test_labels = interleaved_labels(n_classes, test_per_class, seed + 1)
    return {"train": (array_images(train_labels, channels, size, seed + 2), train_labels),
            "test": (array_images(test_labels, channels, size, seed + 3), test_labels)}


def write_all_layouts(root: Path, tiny_train_classes: list[int]) -> dict:
    """Every standard layout under one data root; returns the ground truth of the array formats.

    Per-class counts: MNIST 4 train / 3 test; SVHN 4 / 3; CIFAR-10 5 / 3 (pickles) and 3 / 2 (JPEG
    folders); CIFAR-100 2 / 2; Tiny ImageNet 3 train (classes given) / 2 val (all 200).
    """
    truth = {
        "mnist": array_split(10, 4, 3, 1, 28, seed=10),
        "svhn": array_split(10, 4, 3, 3, 32, seed=20),
        "cifar10": array_split(10, 5, 3, 3, 32, seed=30),
        "cifar100": array_split(100, 2, 2, 3, 32, seed=40),
    }
    write_mnist(root / "mnist" / "raw", truth["mnist"], gz=True)
    for part in ("train", "test"):
        write_svhn(root / "svhn", part, *truth["svhn"][part])
    write_cifar10_pickles(root / "cifar-10-batches-py", truth["cifar10"])
    write_cifar100_pickles(root / "cifar-100-python", truth["cifar100"])
    truth["tinyimagenet_wnids"] = write_tinyimagenet(root, tiny_train_classes)
    return truth
