"""SVHN (cropped digits) from the official ``{train,test,extra}_32x32.mat`` files.

Each file holds 'X', uint8 (32, 32, 3, N), and 'y', (N, 1), where label 10 stands for the digit 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fastgradmix.common.errors import UserError
from fastgradmix.data.openset import LabelledImages
from fastgradmix.data.readers.layout import SVHN, candidates, missing

SPLITS = ("train", "test", "extra")


def find_svhn_dir(root: Path, split: str = "test") -> Path | None:
    """svhn/ (--download), SVHN/, or the data root itself (torchvision's SVHN keeps the files there)."""
    for folder in candidates(root, "svhn", "SVHN"):
        if (folder / f"{split}_32x32.mat").is_file():
            return folder
    return None


def read_svhn(root: str | Path, split: str = "test") -> LabelledImages:
    """SVHN's train (73,257), test (26,032) or extra images: (N, 3, 32, 32) uint8, labels = digits 0-9."""
    if split not in SPLITS:
        raise UserError(f"SVHN split {split!r}: choose one of {', '.join(SPLITS)}")
    root = Path(root).expanduser()
    folder = find_svhn_dir(root, split)
    if folder is None:
        raise missing(SVHN, root, candidates(root, "svhn", "SVHN"), detail=f"{split}_32x32.mat")
    path = folder / f"{split}_32x32.mat"
    from scipy.io import loadmat

    try:
        contents = loadmat(path, variable_names=["X", "y"])
    except Exception as err:  # scipy raises several types (MatReadError, ValueError, OSError, ...)
        raise UserError(f"cannot read {path} ({type(err).__name__}: {err}); it is corrupt or not an SVHN .mat "
                        "file") from None
    images, labels = contents.get("X"), contents.get("y")
    if images is None or labels is None or images.ndim != 4 or images.shape[:3] != (32, 32, 3) \
            or labels.size != images.shape[3]:
        raise UserError(f"{path} does not hold SVHN's 'X' (32, 32, 3, N) and 'y' (N, 1) arrays")
    labels = labels.reshape(-1).astype(np.int64) % 10  # 10 means the digit 0
    pixels = np.ascontiguousarray(images.astype(np.uint8, copy=False).transpose(3, 2, 0, 1))  # (N, 3, 32, 32)
    return LabelledImages(images=torch.from_numpy(pixels), labels=torch.from_numpy(labels),
                          class_names=[str(digit) for digit in range(10)])
