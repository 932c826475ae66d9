"""Class-folder layouts (``<split dir>/<class name>/<images>``): CIFAR-10 as JPEG folders, any ImageFolder.

Only the folders of the classes a run needs are listed and decoded; each class folder is one cache
group, so a second run (or another split sharing classes) loads its arrays instead of decoding again.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from fastgradmix.common.errors import UserError
from fastgradmix.data.openset import LabelledImages
from fastgradmix.data.readers.cache import DecodeOptions, FileGroup, load_groups
from fastgradmix.data.readers.image_files import IMAGE_EXTENSIONS


def class_folders(split_dir: Path) -> list[str]:
    """Sorted names of the class folders in ``split_dir`` (hidden folders ignored)."""
    return sorted(entry.name for entry in split_dir.iterdir() if entry.is_dir() and not entry.name.startswith("."))


def image_files(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (subfolders are not searched).

    An image-named entry that cannot be resolved (a symlink loop, no permission to stat it) is kept, so
    decoding reports it as an unreadable image (one line, or left out under --skip-bad-images); folders,
    fifos and dangling links are not image files.
    """
    with os.scandir(folder) as entries:  # d_type from the listing: no stat per file
        names = sorted(entry.name for entry in entries
                       if entry.name.lower().endswith(IMAGE_EXTENSIONS) and _is_file_or_unresolvable(entry))
    return [folder / name for name in names]


def _is_file_or_unresolvable(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:  # ELOOP, EACCES, ...: FileNotFoundError (a dangling link) is already False
        return True


def read_class_folders(split_dir: Path, class_names: list[str], classes: list[int] | None,
                       options: DecodeOptions, tag: str) -> LabelledImages:
    """Images of the chosen classes under ``split_dir``; label = index of the folder name in ``class_names``.

    ``classes`` (canonical indices; None = all) limits what is read. A chosen class without a folder,
    or with a folder holding no images, is an error.
    """
    chosen = list(range(len(class_names))) if classes is None else list(classes)
    groups = []
    for index in chosen:
        folder = split_dir / class_names[index]
        if not folder.is_dir():
            raise UserError(f"class folder {folder} is missing (class {class_names[index]!r})")
        files = image_files(folder)
        if not files:
            raise UserError(f"class folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}): "
                            f"class {class_names[index]!r} is empty")
        groups.append(FileGroup(f"{tag}-{class_names[index]}", files))
    decoded = load_groups(groups, options, desc=f"decode {split_dir.name} images")
    return collect(groups, decoded, chosen, class_names)


def collect(groups: list[FileGroup], decoded, labels: list[int], class_names: list[str]) -> LabelledImages:
    """Concatenates decoded groups, group g labelled ``labels[g]``; unreadable (skipped) files left out."""
    images, label_rows, files, skipped = [], [], [], []
    for group, result, label in zip(groups, decoded, labels, strict=True):
        bad = set(result.bad)
        images.append(result.images)
        label_rows.append(np.full(result.images.shape[0], label, dtype=np.int64))
        files.extend(str(path) for i, path in enumerate(group.files) if i not in bad)
        skipped.extend(str(group.files[i]) for i in result.bad)
    stacked = np.concatenate(images) if images else np.zeros((0, 3, 1, 1), dtype=np.uint8)
    return LabelledImages(images=torch.from_numpy(stacked), labels=torch.from_numpy(np.concatenate(label_rows)),
                          class_names=list(class_names), files=files, skipped=skipped)
