"""One limit on the pixels of an image file, read from its header before anything is decoded.

The limit is PIL's decompression-bomb limit, ``PIL.Image.MAX_IMAGE_PIXELS`` (89478485 pixels, a 256 MiB
RGB image at 8 bits), applied as a hard limit: an image with more pixels is refused before decoding,
so a small file that claims to be huge never allocates its claim. The dataset readers and both
predictors (the C++ one holds the same number: cpp/image_decode.hpp) refuse at this one limit.

PIL itself only warns between one and two times the limit and raises above twice it; both cases are
refused here with one message, so its warning is silenced once for the process.
"""

from __future__ import annotations

import re
import warnings

from PIL import Image

warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

_PIL_PIXELS = re.compile(r"\((\d+) pixels\)")  # PIL's DecompressionBombError message names the pixel count


class ImageTooLarge(ValueError):
    """An image file whose header claims more pixels than the limit."""

    def __init__(self, pixels: int | None):
        self.pixels = pixels
        claim = f"{pixels} pixels" if pixels is not None else "more pixels than that"
        super().__init__(f"image has {claim}, more than the limit of {max_image_pixels()} "
                         "(PIL's decompression-bomb limit)")


def max_image_pixels() -> int:
    """The limit in force: PIL's Image.MAX_IMAGE_PIXELS (it may be changed by the caller; None means 2**63 - 1)."""
    limit = Image.MAX_IMAGE_PIXELS
    return 2**63 - 1 if limit is None else int(limit)


def check_pixels(image: Image.Image) -> None:
    """Raises ImageTooLarge when an opened (not yet loaded) image has more pixels than the limit."""
    width, height = image.size
    if width * height > max_image_pixels():
        raise ImageTooLarge(width * height)


def too_large(error: Image.DecompressionBombError) -> ImageTooLarge:
    """PIL's own refusal (above twice the limit, raised while opening) as the same ImageTooLarge."""
    found = _PIL_PIXELS.search(str(error))
    return ImageTooLarge(int(found.group(1)) if found else None)
