"""Image files in, model inputs out: the predictors' decoding and preprocessing rules.

The native predictor (cpp/image_decode.cpp, cpp/predictor.cpp) follows the same rules, so both print
the same answers:

- inputs: files are decoded whatever their name; folders are searched recursively, in byte order of
  the names, for ``.jpg``/``.jpeg``/``.png`` files (any case), without following symlinks to folders;
  a folder without one is a problem of its own.
- limits: an image with more pixels than PIL's decompression-bomb limit is refused from its header.
- decoding: JPEG and PNG only, to 8 bits per channel: palette PNGs expand to RGB, 16-bit samples keep
  their high byte, PNG transparency (tRNS) and gamma are ignored, EXIF orientation is not applied.
- channels: 1 (grayscale) and 3 (RGB) are accepted. A grayscale model converts RGB with the ITU-R 601
  luma in PIL's integer form, (19595 R + 38470 G + 7471 B + 32768) >> 16; an RGB model replicates gray.
  Images with alpha (2 or 4 channels) and CMYK JPEGs are rejected: there is no agreed background.
- then the evaluation's own eval_view: /255, antialiased bilinear resize to S x S (only when the size
  differs), per-channel (x - mean) / std.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from fastgradmix.data.augment import AugmentSpec, eval_view
from fastgradmix.data.readers.pixel_limit import ImageTooLarge, check_pixels, too_large
from fastgradmix.deploy.model_folder import Preprocessing

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LUMA_WEIGHTS = (19595, 38470, 7471)  # ITU-R 601 luma * 65536, as PIL's convert("L")


OUT_OF_MEMORY = "out of memory while decoding or resizing the image"  # cpp/image_decode.hpp's kOutOfMemory


class ImageProblem(Exception):
    """Why one image cannot be scored (the message does not repeat its path): that image's problem line."""


def list_images(inputs: list[str]) -> list[tuple[str, str | None]]:
    """Expands the command line into (path, problem) pairs, in order; problem is None for an image to read.

    A folder contributes its image files (recursively, sorted by name) or one problem when it holds none.
    """
    found: list[tuple[str, str | None]] = []
    for item in inputs:
        if os.path.isdir(item):
            try:
                images = _images_under(item)
            except OSError as err:
                found.append((item, f"cannot list folder ({err.strerror})"))
                continue
            if images:
                found.extend((path, None) for path in images)
            else:
                found.append((item, "folder holds no .jpg, .jpeg or .png images"))
        elif os.path.isfile(item):
            found.append((item, None))
        else:
            found.append((item, "no such file or folder"))
    return found


def _images_under(folder: str) -> list[str]:
    """Image files under ``folder``: entries in byte order of their names (as the C++ predictor sorts
    them), subfolders searched but symlinks to folders not followed (a link to .. would repeat the tree
    forever), symlinks to files read; names that resolve to nothing regular (a dangling or looping link,
    a fifo) are left out."""
    images = []
    for name in sorted(os.listdir(folder), key=os.fsencode):
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            images.extend(_images_under(path))
        elif name.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(path):
            images.append(path)
    return images


def read_image(path: str) -> np.ndarray:
    """An image file -> uint8 (H, W, C) with C in {1, 3}; any problem is an ImageProblem.

    The pixel count is checked against the limit (data/readers/pixel_limit.py) from the header, before
    anything is decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path, formats=("JPEG", "PNG")) as image:
            check_pixels(image)
            image.load()
            mode = image.mode
            if mode in ("1", "P"):
                image.info.pop("transparency", None)  # tRNS is ignored (and PIL would warn on stderr about it)
                image = image.convert("L" if mode == "1" else "RGB")
                mode = image.mode
            if mode.startswith("I;16") or mode == "I":
                # 16-bit grayscale PNG: keep the high byte, as libpng's png_set_strip_16 does
                pixels = (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)[..., None]
                return pixels
            bands = len(image.getbands())
            if mode not in ("L", "RGB"):
                raise ImageProblem(f"image has {bands} channels ({mode}); the model takes grayscale or RGB "
                                   "images: remove the alpha channel or convert it to RGB first")
            pixels = np.asarray(image, dtype=np.uint8)
    except ImageProblem:
        raise
    except ImageTooLarge as err:
        raise ImageProblem(str(err)) from None
    except Image.DecompressionBombError as err:  # PIL's own refusal while opening, above twice the limit
        raise ImageProblem(str(too_large(err))) from None
    except UnidentifiedImageError:
        raise ImageProblem("cannot decode image (not a JPEG or PNG file)") from None
    except MemoryError:
        raise ImageProblem(OUT_OF_MEMORY) from None
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageProblem(f"cannot decode image ({err})") from None
    return pixels.reshape(pixels.shape[0], pixels.shape[1], -1)


def to_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (H, W, 1 or 3) -> uint8 (channels, H, W): RGB -> luma for 1, gray replicated for 3."""
    if pixels.shape[2] == 3 and channels == 1:
        rgb = pixels.astype(np.uint32)
        luma = (LUMA_WEIGHTS[0] * rgb[..., 0] + LUMA_WEIGHTS[1] * rgb[..., 1] + LUMA_WEIGHTS[2] * rgb[..., 2]
                + 32768) >> 16
        pixels = luma.astype(np.uint8)[..., None]
    elif pixels.shape[2] == 1 and channels == 3:
        pixels = np.repeat(pixels, 3, axis=2)
    return np.array(pixels.transpose(2, 0, 1), order="C")  # a writable copy for torch.from_numpy


def preprocess(images: list[np.ndarray], prep: Preprocessing, device: torch.device) -> torch.Tensor:
    """Decoded uint8 (H, W, C) images of any sizes -> the model input (N, channels, S, S) float32.

    Each image goes through eval_view on its own (sizes differ); the resize is the evaluation's.
    """
    spec = AugmentSpec(size=prep.image_size, mean=prep.mean, std=prep.std, flip=False, color=False)
    views = []
    for pixels in images:
        planar = torch.from_numpy(to_channels(pixels, prep.channels)).to(device)  # (C, H, W) uint8
        views.append(eval_view(planar[None], spec))  # (1, C, S, S)
    return torch.cat(views)
