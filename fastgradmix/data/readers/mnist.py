"""MNIST from its idx files, raw or gzip'd, in torchvision's ``raw/`` naming.

idx format: a 4-byte magic (two zero bytes, a type code, the number of dimensions), one big-endian
uint32 per dimension, then the values. MNIST uses type 0x08 (uint8): images are 3-D (N, 28, 28), labels
1-D (N,).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from fastgradmix.common.errors import UserError
from fastgradmix.data.openset import LabelledImages
from fastgradmix.data.readers.layout import MNIST, candidates, missing

FILES = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_UBYTE = 0x08


def read_idx(path: Path) -> np.ndarray:
    """An idx file (raw or .gz) -> its uint8 array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            blob = handle.read()
    except (OSError, EOFError) as err:
        raise UserError(f"cannot read {path} ({err})") from None
    if len(blob) < 4 or blob[0] != 0 or blob[1] != 0:
        raise UserError(f"{path} is not an idx file (bad magic number)")
    if blob[2] != _UBYTE:
        raise UserError(f"{path}: idx type code {blob[2]:#04x} is not uint8 (0x08)")
    ndim = blob[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(blob[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims))
    if len(blob) != expected:
        raise UserError(f"{path} is truncated or corrupt: {len(blob)} bytes, the header {dims} needs {expected}")
    return np.frombuffer(blob, dtype=np.uint8, offset=header).reshape(dims)


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_mnist_dir(root: Path) -> Path | None:
    """The folder holding the idx files: mnist/raw (unpack.sh, --download), MNIST/raw (torchvision), ..."""
    for folder in candidates(root, "mnist/raw", "MNIST/raw", "raw"):
        if _find(folder, FILES[True][0]) or _find(folder, FILES[False][0]):
            return folder
    return None


def read_mnist(root: str | Path, train: bool = True) -> LabelledImages:
    """MNIST's training (60,000) or test (10,000) images: (N, 1, 28, 28) uint8, labels = digits 0-9."""
    root = Path(root).expanduser()
    folder = find_mnist_dir(root)
    images_name, labels_name = FILES[train]
    if folder is None:
        raise missing(MNIST, root, candidates(root, "mnist/raw", "MNIST/raw"))
    images_path, labels_path = _find(folder, images_name), _find(folder, labels_name)
    if images_path is None or labels_path is None:
        absent = images_name if images_path is None else labels_name
        raise missing(MNIST, root, [folder], detail=f"{absent}[.gz] is missing")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise UserError(f"{images_path} {images.shape} and {labels_path} {labels.shape} do not form an image set")
    if labels.size and labels.max() > 9:
        raise UserError(f"{labels_path} holds label {labels.max()}: MNIST labels are digits 0-9")
    return LabelledImages(images=torch.from_numpy(images.copy()).unsqueeze(1),
                          labels=torch.from_numpy(labels.astype(np.int64)),
                          class_names=[str(digit) for digit in range(10)])
