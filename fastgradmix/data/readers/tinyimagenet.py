"""Tiny ImageNet in the official ``tiny-imagenet-200`` layout.

    wnids.txt                             the 200 class ids; class index = position in sorted order
    train/<wnid>/images/<wnid>_<k>.JPEG   500 training images per class, 64x64
    val/val_annotations.txt               "<file>\\t<wnid>\\t<box>" per validation image
    val/images/val_<k>.JPEG               50 validation images per class (the OSR test set)

Only the classes asked for are listed and decoded (an OSR split reads its 20 known classes' training
images, not 200). Each class's images are one cache group.
"""

from __future__ import annotations

from pathlib import Path

from fastgradmix.common.errors import UserError
from fastgradmix.data.openset import LabelledImages
from fastgradmix.data.readers.cache import DecodeOptions, FileGroup, load_groups
from fastgradmix.data.readers.folders import collect, image_files
from fastgradmix.data.readers.layout import TINYIMAGENET, candidates, missing

FOLDER = "tiny-imagenet-200"
SPLITS = ("train", "val")


def find_tinyimagenet_dir(root: Path) -> Path | None:
    for folder in candidates(root, FOLDER):
        if (folder / "wnids.txt").is_file():
            return folder
    return None


def read_wnids(folder: Path) -> list[str]:
    """The class ids in class-index order (sorted, the order of an ImageFolder over train/)."""
    wnids = sorted({line.strip() for line in (folder / "wnids.txt").read_text().splitlines() if line.strip()})
    if not wnids:
        raise UserError(f"{folder / 'wnids.txt'} lists no classes")
    return wnids


def _val_files(folder: Path, wnids: list[str]) -> dict[str, list[Path]]:
    """wnid -> its validation image files, from val/val_annotations.txt."""
    annotations = folder / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise missing(TINYIMAGENET, folder.parent, [folder], detail="val/val_annotations.txt is missing")
    by_class: dict[str, list[Path]] = {wnid: [] for wnid in wnids}
    for number, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in by_class:
            raise UserError(f"{annotations} line {number}: expected '<file>\\t<wnid>\\t...' with a wnid from "
                            f"wnids.txt, got {line[:80]!r}")
        by_class[fields[1]].append(folder / "val" / "images" / fields[0])
    return {wnid: sorted(files) for wnid, files in by_class.items()}


def read_tinyimagenet(root: str | Path, split: str = "val", classes: list[int] | None = None,
                      options: DecodeOptions | None = None) -> LabelledImages:
    """Tiny ImageNet train or val images of ``classes`` (indices into sorted wnids; None = all 200).

    (N, 3, 64, 64) uint8; labels are class indices; ``files`` names each row's JPEG.
    """
    if split not in SPLITS:
        raise UserError(f"Tiny ImageNet split {split!r}: choose train or val")
    root = Path(root).expanduser()
    folder = find_tinyimagenet_dir(root)
    if folder is None:
        raise missing(TINYIMAGENET, root, candidates(root, FOLDER))
    wnids = read_wnids(folder)
    chosen = list(range(len(wnids))) if classes is None else list(classes)
    val_files = _val_files(folder, wnids) if split == "val" else {}
    groups = []
    for index in chosen:
        wnid = wnids[index]
        if split == "train":
            images_dir = folder / "train" / wnid / "images"
            if not images_dir.is_dir():
                raise missing(TINYIMAGENET, folder.parent, [images_dir],
                              detail=f"training images of class {wnid} (index {index})")
            files = image_files(images_dir)
        else:
            files = val_files[wnid]
            for path in files:
                if not path.is_file():
                    raise missing(TINYIMAGENET, folder.parent, [path], detail="a validation image listed in "
                                  "val_annotations.txt")
        if not files:
            raise UserError(f"Tiny ImageNet class {wnid} (index {index}) has no {split} images in {folder}: "
                            "the class is empty")
        groups.append(FileGroup(f"tinyimagenet-{split}-{wnid}", files))
    decoded = load_groups(groups, options or DecodeOptions(), desc=f"decode tinyimagenet {split}")
    return collect(groups, decoded, chosen, wnids)
