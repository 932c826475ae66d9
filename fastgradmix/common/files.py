"""Writing files atomically, with one permission policy, for every file the tools write.

A file is written to a temporary file beside its target, flushed and fsynced, then renamed over the
target: a crash, a full disk or Ctrl-C while writing leaves the previous version intact and never a
half-written file. Every file gets the permissions ``open()`` would give it (0666 less the umask), not
mkstemp's private 0600: run folders, reports and model folders are meant to be read by others.

A write that the machine refuses (a full disk or quota, a read-only or vanished folder, no permission)
ends as one ``UserError`` line naming the file and the reason, after the temporary file is removed.
JSON is written strictly: a NaN or an infinity is refused (naming its key) rather than written as the
non-standard ``NaN``/``Infinity`` literals that other JSON readers, and ours, reject.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from fastgradmix.common.errors import UserError
from fastgradmix.common.schema import first_non_finite

# what torch.save's C++ zip writer raises (a RuntimeError) when the Python file under it failed to write
_TORCH_WRITE_FAILURES = ("unexpected pos", "file write failed", "failed writing file")


def _default_mode() -> int:
    umask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(umask)
    return 0o666 & ~umask


def _write_failure(error: BaseException) -> str | None:
    """The reason a write failed when the system refused it (an OSError anywhere in the exception's chain,
    or torch's writer reporting a failed write), else None: other exceptions are bugs and propagate."""
    seen = error
    while seen is not None:
        if isinstance(seen, OSError):
            return seen.strerror or str(seen) or type(seen).__name__
        seen = seen.__cause__ or seen.__context__
    if isinstance(error, RuntimeError) and any(text in str(error) for text in _TORCH_WRITE_FAILURES):
        return "the write failed (" + str(error).strip().splitlines()[0] + ")"
    return None


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Calls ``write(handle)`` on a binary temporary file beside ``path``, then renames it to ``path``.

    A refused write raises UserError("cannot write PATH (reason); ..."); the temporary file is gone and a
    previous ``path`` is untouched."""
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        reason = None if isinstance(error, (KeyboardInterrupt, SystemExit)) else _write_failure(error)
        if reason is None:
            raise
        kept = "the previous version is intact" if path.exists() else "nothing was written"
        raise UserError(f"cannot write {path} ({reason}); {kept}") from None


def write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def append_line(path: Path, line: str) -> None:
    """Appends ``line`` and a newline to a log file (metrics.jsonl). A refused write cuts the file back to
    its previous length, so no partial line stays, and is one UserError line."""
    path = Path(path)
    data = (line + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, _default_mode())
    except OSError as error:
        raise UserError(f"cannot write {path} ({error.strerror})") from None
    try:
        size = os.fstat(fd).st_size
        try:
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
        except OSError as error:
            os.ftruncate(fd, size)
            raise UserError(f"cannot write {path} ({error.strerror}); its earlier lines are intact") from None
    finally:
        os.close(fd)


def json_text(value: Any, path: Path | str = "JSON", indent: int | None = 2) -> str:
    """Standard JSON (no NaN/Infinity literals); a non-finite number is a UserError naming its key."""
    try:
        return json.dumps(value, indent=indent, sort_keys=False, allow_nan=False)
    except ValueError:
        where = first_non_finite(value)
        if where is None:
            raise
        raise UserError(f"cannot write {path}: {where} is not a finite number (JSON has no NaN or "
                        "infinity); nothing was written") from None


def write_json(path: Path, value: Any) -> None:
    """Indented standard JSON with one trailing newline."""
    write_text(path, json_text(value, path) + "\n")
