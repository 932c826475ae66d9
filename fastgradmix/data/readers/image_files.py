"""Decoding image files (JPEG, PNG, ...) into one uint8 array, with a thread pool and a progress bar.

PIL releases the GIL while it decodes, so a few threads decode in parallel. Files are read as RGB
(Tiny ImageNet holds some grayscale JPEGs). A file that cannot be decoded, or whose header claims more
pixels than the limit (pixel_limit.py), ends the run with an error naming it, or, with ``skip_bad``, is
left out and reported back to the caller.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fastgradmix.common.errors import UserError
from fastgradmix.data.readers.pixel_limit import check_pixels, too_large

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")
_CHUNK = 256  # files per thread-pool task: big enough to amortise scheduling, small for a live bar


@dataclass
class Decoded:
    images: np.ndarray  # (n_good, 3, H, W) uint8, the readable files in the given order
    bad: list[int]  # indices (into the given file list) of the files that could not be decoded
    reasons: dict[int, str]  # why each bad file could not be decoded


def _read_rgb(path: Path, size: int | None) -> np.ndarray:
    """(H, W, 3) uint8; resized (shorter side to ``size``, centre crop) when ``size`` is given."""
    from PIL import Image

    with Image.open(path) as image:
        check_pixels(image)  # from the header, before anything is decoded
        image = image.convert("RGB")
        if size is not None and image.size != (size, size):
            width, height = image.size
            scale = size / min(width, height)
            resized = (max(size, round(width * scale)), max(size, round(height * scale)))
            image = image.resize(resized, Image.BILINEAR, reducing_gap=None)
            left, top = (resized[0] - size) // 2, (resized[1] - size) // 2
            image = image.crop((left, top, left + size, top + size))
        return np.asarray(image, dtype=np.uint8)


def decode_files(files: list[Path], size: int | None = None, skip_bad: bool = False, progress: bool = True,
                 desc: str = "decode images") -> Decoded:
    """Decodes ``files`` into (N, 3, H, W) uint8. Without ``size`` all images must share one size."""
    from PIL import Image

    pixels: list[np.ndarray | None] = [None] * len(files)
    failures: dict[int, str] = {}

    def decode_chunk(start: int) -> int:
        for index in range(start, min(start + _CHUNK, len(files))):
            try:
                pixels[index] = _read_rgb(files[index], size)
            except Image.DecompressionBombError as err:  # PIL's own refusal, above twice the limit
                failures[index] = f"ImageTooLarge: {too_large(err)}"
            except Exception as err:  # PIL raises OSError, SyntaxError, EOFError, ... for broken files
                failures[index] = f"{type(err).__name__}: {err}"
        return min(_CHUNK, len(files) - start)

    workers = min(8, os.cpu_count() or 1)
    with tqdm(total=len(files), desc=desc, unit="img", disable=not progress, leave=False) as bar, \
            ThreadPoolExecutor(max_workers=workers) as pool:
        for done in pool.map(decode_chunk, range(0, len(files), _CHUNK)):
            bar.update(done)

    if failures and not skip_bad:
        index = min(failures)
        raise bad_image_error(files[index], failures[index])
    good = [index for index in range(len(files)) if index not in failures]
    for index in good[1:]:
        if pixels[index].shape != pixels[good[0]].shape:
            (h, w), (h0, w0) = pixels[index].shape[:2], pixels[good[0]].shape[:2]
            raise UserError(f"image {files[index]} is {w}x{h} but {files[good[0]]} is {w0}x{h0}: this layout "
                            "expects images of one size")
    if not good:
        return Decoded(np.zeros((0, 3, size or 1, size or 1), dtype=np.uint8), sorted(failures), failures)
    stacked = np.stack([pixels[index] for index in good])  # (n_good, H, W, 3)
    return Decoded(np.ascontiguousarray(stacked.transpose(0, 3, 1, 2)), sorted(failures), failures)


def bad_image_error(path: Path, reason: str) -> UserError:
    return UserError(f"cannot read image {path} ({reason}); repair or delete it, or pass --skip-bad-images "
                     "to leave unreadable images out")
