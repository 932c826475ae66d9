"""Paths in the predictors' text lines: escaped so that one image is always one line.

A file name may hold a newline, a tab or bytes that are not UTF-8. Text lines (and problem lines on
stderr) show such a path with escapes, as docs/model_format.md documents and cpp/printable.cpp does:
backslash as ``\\\\``; tab, newline, carriage return as ``\\t``, ``\\n``, ``\\r``; other control characters
(U+0000-U+001F, U+007F-U+009F) as ``\\xNN``; a byte that is not UTF-8 (Python's surrogateescape,
U+DC80-U+DCFF) and any other lone surrogate as ``\\uNNNN``. Everything else is printed as it is.
--json lines need none of this: JSON escapes every such character itself.
"""

from __future__ import annotations

import os

_NAMED = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(char: str) -> str:
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    if code < 0x20 or 0x7F <= code <= 0x9F:
        return f"\\x{code:02x}"
    if 0xD800 <= code <= 0xDFFF:
        return f"\\u{code:04x}"
    return char


def printable(path: str | os.PathLike) -> str:
    """A path as the text lines show it (see the module docstring)."""
    text = os.fspath(path)
    if text.isprintable() and "\\" not in text:  # the common case, no copy
        return text
    return "".join(map(_escape, text))
