"""Writing files atomically, with one permission policy, for every file the tools write.

A file is written to a temporary file beside its target, flushed and fsynced, then renamed over the
target: a crash, a full disk or Ctrl-C while writing leaves the previous version intact and never a
half-written file. Every file gets the permissions ``open()`` would give it (0666 less the umask), not
mkstemp's private 0600: run folders, reports and model folders are meant to be read by others.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _default_mode() -> int:
    umask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Calls ``write(handle)`` on a binary temporary file beside ``path``, then renames it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: Path, value: Any) -> None:
    """Indented JSON with one trailing newline."""
    write_text(path, json.dumps(value, indent=2, sort_keys=False) + "\n")
