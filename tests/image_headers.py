"""Image files that are only a header: a small file claiming a large image (the pixel-limit tests)."""

from __future__ import annotations

import struct
import zlib


def png_header(width: int, height: int, color_type: int = 0) -> bytes:
    """A PNG signature and IHDR claiming width x height, then a little IDAT and no end: decoding must fail."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64)))


def jpeg_header(width: int, height: int) -> bytes:
    """SOI, a baseline SOF0 of one component claiming width x height, then nothing."""
    sof = struct.pack(">BHHB", 8, height, width, 1) + bytes([1, 0x11, 0])
    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof
