"""Decoded image files cached as uint8 arrays, so the second run of a file-backed protocol starts fast.

The unit is a group of files (one class folder, or one class's validation images). A group's cache
file is ``<cache dir>/<tag>--<key>.npz`` where the key hashes every source file's path, size and
modification time plus the decode settings: when a file changes, is added or removed, the key changes
and the group is decoded again (the stale file of the same tag is deleted). Files are written to a
temporary name and renamed, so an interrupted run never leaves a half-written cache behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastgradmix.common.errors import UserError
from fastgradmix.common.files import atomic_write
from fastgradmix.data.readers.image_files import bad_image_error, decode_files

CACHE_FOLDER = ".fastgradmix-cache"
_FORMAT = 1  # bump when the decoded form changes


@dataclass
class FileGroup:
    tag: str  # stable name of the group, e.g. "tiny-imagenet-200-train-n01443537"
    files: list[Path]


@dataclass
class DecodeOptions:
    cache_dir: Path | None = None  # None: decode every time
    skip_bad: bool = False  # leave unreadable images out instead of stopping
    progress: bool = True
    size: int | None = None  # resize every image to size x size (ImageFolder); None keeps native sizes


@dataclass
class GroupImages:
    images: np.ndarray  # (n_good, 3, H, W) uint8, the group's readable files in order
    bad: list[int]  # indices into the group's files of the unreadable ones


def default_cache_dir(data_root: Path) -> Path | None:
    """<data_root>/.fastgradmix-cache when it can be written (created on first use), else None: no caching."""
    folder = data_root / CACHE_FOLDER
    if folder.is_dir():
        return folder if os.access(folder, os.W_OK) else None
    return folder if data_root.is_dir() and os.access(data_root, os.W_OK) else None


def _key(files: list[Path], size: int | None) -> str:
    """Hash of the decode settings and every file's path, size and modification time."""
    entries = []
    for path in files:
        try:
            stat = path.stat()
            entries.append((os.path.abspath(path), stat.st_size, stat.st_mtime_ns))
        except OSError:  # unresolvable (a symlink loop): decoding reports it as an unreadable image
            entries.append((os.path.abspath(path), -1, -1))
    blob = json.dumps([_FORMAT, size, entries]).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _safe_tag(tag: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", tag)


def _load(path: Path) -> GroupImages | None:
    try:
        with np.load(path, allow_pickle=False) as stored:
            return GroupImages(stored["images"], stored["bad"].tolist())
    except (OSError, ValueError, KeyError):
        return None  # unreadable cache: decode again and replace it


def _store(folder: Path, tag: str, key: str, group: GroupImages) -> None:
    """Writes the group atomically (common.files.atomic_write) and removes its stale versions."""
    bad = np.asarray(group.bad, dtype=np.int64)
    try:
        atomic_write(folder / f"{tag}--{key}.npz", lambda handle: np.savez(handle, images=group.images, bad=bad))
    except OSError as err:  # a full disk must not stop the run: it only loses the cache
        print(f"fastgradmix: note: could not write the image cache in {folder} ({err})", file=sys.stderr)
        return
    for stale in folder.glob(f"{tag}--*.npz"):
        if stale.name != f"{tag}--{key}.npz" and stale.name.rsplit("--", 1)[0] == tag:
            stale.unlink(missing_ok=True)


def load_groups(groups: list[FileGroup], options: DecodeOptions, desc: str = "decode images") -> list[GroupImages]:
    """Each group's images: loaded from the cache, or decoded (all missing groups in one pass) and cached."""
    results: list[GroupImages | None] = [None] * len(groups)
    keys = [_key(group.files, options.size) for group in groups]
    tags = [_safe_tag(group.tag) for group in groups]
    if options.cache_dir is not None:
        for index, (tag, key) in enumerate(zip(tags, keys, strict=True)):
            path = options.cache_dir / f"{tag}--{key}.npz"
            if path.is_file():
                results[index] = _load(path)
    todo = [index for index, result in enumerate(results) if result is None]
    reasons: dict[Path, str] = {}
    if todo:
        files = [path for index in todo for path in groups[index].files]
        decoded = decode_files(files, options.size, skip_bad=options.skip_bad, progress=options.progress,
                               desc=desc)
        reasons = {files[i]: reason for i, reason in decoded.reasons.items()}
        bad, start, good_start = set(decoded.bad), 0, 0
        for index in todo:
            count = len(groups[index].files)
            group_bad = [i - start for i in range(start, start + count) if i in bad]
            n_good = count - len(group_bad)
            results[index] = GroupImages(decoded.images[good_start:good_start + n_good], group_bad)
            if options.cache_dir is not None:
                _store(options.cache_dir, tags[index], keys[index], results[index])
            start, good_start = start + count, good_start + n_good
    _check(groups, results, options, reasons)
    return results  # type: ignore[return-value]


def _check(groups: list[FileGroup], results: list[GroupImages], options: DecodeOptions,
           reasons: dict[Path, str]) -> None:
    """Unreadable files stop the run unless skipped (also when cached); all groups share one image size."""
    first = None
    for group, result in zip(groups, results, strict=True):
        if result.bad and not options.skip_bad:
            path = group.files[result.bad[0]]
            raise bad_image_error(path, reasons.get(path, "it is corrupt or not an image"))
        if result.images.shape[0] == 0:
            continue
        if first is None:
            first = (result.images.shape[-2:], group)
        elif result.images.shape[-2:] != first[0]:
            (h, w), (h0, w0) = result.images.shape[-2:], first[0]
            raise UserError(f"images in {group.files[0].parent} are {w}x{h} but those in "
                            f"{first[1].files[0].parent} are {w0}x{h0}: this layout expects one image size")
