"""CIFAR-10 and CIFAR-100: the official python pickles, or CIFAR-10 as JPEG/PNG class folders.

Pickles (``cifar-10-batches-py``: data_batch_1..5, test_batch, batches.meta; ``cifar-100-python``:
train, test, meta) are dicts with bytes keys: b'data' is uint8 (N, 3072), each row the red, green and
blue 32x32 planes; labels are b'labels' (CIFAR-10) or b'fine_labels' (CIFAR-100); class names are
b'label_names' / b'fine_label_names' in the meta file. They are read with a restricted unpickler.

The class-folder form (``cifar10-jpeg/{train,test}/<class name>/*``, as in ../shared/data) must use the
official class names; the label is the official index of the folder's name (alphabetical order).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fastgradmix.common.errors import UserError
from fastgradmix.data.openset import LabelledImages
from fastgradmix.data.readers.cache import DecodeOptions
from fastgradmix.data.readers.folders import class_folders, read_class_folders
from fastgradmix.data.readers.layout import CIFAR10, CIFAR100, candidates, missing
from fastgradmix.data.readers.safe_pickle import load_data_pickle

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_PICKLES = {
    "cifar10": dict(folder="cifar-10-batches-py", train=[f"data_batch_{i}" for i in range(1, 6)],
                    test=["test_batch"], meta="batches.meta", names=b"label_names", labels=b"labels",
                    layout=CIFAR10, classes=10),
    "cifar100": dict(folder="cifar-100-python", train=["train"], test=["test"], meta="meta",
                     names=b"fine_label_names", labels=b"fine_labels", layout=CIFAR100, classes=100),
}
JPEG_FOLDER = "cifar10-jpeg"


def find_pickle_dir(root: Path, which: str) -> Path | None:
    spec = _PICKLES[which]
    for folder in candidates(root, spec["folder"]):
        if (folder / spec["meta"]).is_file():
            return folder
    return None


def find_jpeg_dir(root: Path) -> Path | None:
    for folder in candidates(root, JPEG_FOLDER):
        if (folder / "train").is_dir() and (folder / "test").is_dir():
            return folder
    return None


def _field(batch: dict, key: bytes, path: Path):
    if not isinstance(batch, dict) or key not in batch:
        raise UserError(f"{path} has no {key!r} entry: it is not a CIFAR python pickle")
    return batch[key]


def _read_pickles(folder: Path, which: str, train: bool) -> LabelledImages:
    spec = _PICKLES[which]
    meta_path = folder / spec["meta"]
    names = [name.decode() if isinstance(name, bytes) else str(name)
             for name in _field(load_data_pickle(meta_path), spec["names"], meta_path)]
    if len(names) != spec["classes"]:
        raise UserError(f"{meta_path} lists {len(names)} classes; {spec['layout'].dataset} has {spec['classes']}")
    images, labels = [], []
    for name in spec["train" if train else "test"]:
        path = folder / name
        if not path.is_file():
            raise missing(spec["layout"], folder.parent, [folder], detail=f"{name} is missing")
        batch = load_data_pickle(path)
        data = np.asarray(_field(batch, b"data", path))
        batch_labels = np.asarray(_field(batch, spec["labels"], path), dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 \
                or batch_labels.shape != (data.shape[0],):
            raise UserError(f"{path}: b'data' {data.shape} {data.dtype} and labels {batch_labels.shape} are not "
                            "CIFAR's uint8 (N, 3072) rows with one label each")
        if batch_labels.size and not 0 <= batch_labels.min() <= batch_labels.max() < len(names):
            raise UserError(f"{path}: labels outside 0..{len(names) - 1}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(batch_labels)
    return LabelledImages(images=torch.from_numpy(np.concatenate(images)),
                          labels=torch.from_numpy(np.concatenate(labels)), class_names=names)


def read_cifar10(root: str | Path, train: bool = True, classes: list[int] | None = None,
                 options: DecodeOptions | None = None) -> LabelledImages:
    """CIFAR-10 train (50,000) or test (10,000): (N, 3, 32, 32) uint8, official labels 0-9.

    Reads the pickles when present, else the JPEG class folders (only the folders of ``classes``, if
    given; with pickles every image is read and ``classes`` selects rows).
    """
    root = Path(root).expanduser()
    pickles = find_pickle_dir(root, "cifar10")
    if pickles is not None:
        data = _read_pickles(pickles, "cifar10", train)
        return data if classes is None else data.select(classes)
    jpeg = find_jpeg_dir(root)
    if jpeg is None:
        raise missing(CIFAR10, root, candidates(root, _PICKLES["cifar10"]["folder"], JPEG_FOLDER))
    split_dir = jpeg / ("train" if train else "test")
    found = class_folders(split_dir)
    if found != CIFAR10_CLASSES:
        raise UserError(f"{split_dir} holds class folders {found}; CIFAR-10 needs exactly {CIFAR10_CLASSES}")
    options = options or DecodeOptions()
    return read_class_folders(split_dir, CIFAR10_CLASSES, classes, options, tag=f"cifar10-jpeg-{split_dir.name}")


def read_cifar100(root: str | Path, train: bool = True) -> LabelledImages:
    """CIFAR-100 train (50,000) or test (10,000): (N, 3, 32, 32) uint8, fine labels 0-99."""
    root = Path(root).expanduser()
    pickles = find_pickle_dir(root, "cifar100")
    if pickles is None:
        raise missing(CIFAR100, root, candidates(root, _PICKLES["cifar100"]["folder"]))
    return _read_pickles(pickles, "cifar100", train)
