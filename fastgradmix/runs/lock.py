"""An exclusive lock on a run folder, held while a tool writes into it.

Training (also a ``--split all`` sweep and ``--resume``) and evaluation take ``FOLDER/.lock`` before they
look at or write anything in the folder and keep it to the end, so two of them never write one folder:
the second stops at once with one line naming the holder's process id. Taking the lock before the
"does this folder already hold a run?" check makes that check race-free (two runs started together:
exactly one runs).

The lock is ``flock`` on the file, so it dies with its process (kill -9 included): a stale ``.lock``
file left by a killed process locks nothing. A holder unlinks the file before it lets go; a process that
opened the old file meanwhile sees that its locked file is no longer the one at the path and tries again.
Folders the lock had to create are removed again when they are still empty at release (a run that
stopped on bad input leaves nothing behind).
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastgradmix.common.errors import UserError

LOCK_FILE = ".lock"
_ATTEMPTS = 20  # a holder that releases while we open is retried; more than a handful never happens
_HOLDER_WAIT_S = 1.0  # a holder writes its id right after locking; wait this long to read it


class FolderLock:
    """A held lock; ``release`` unlinks the lock file, unlocks, and removes the folders it created if empty."""

    def __init__(self, folder: Path, fd: int, created: list[Path]):
        self.folder, self._fd, self._created = folder, fd, created

    def release(self) -> None:
        if self._fd < 0:
            return
        try:
            (self.folder / LOCK_FILE).unlink(missing_ok=True)  # while still locked: see the module docstring
        finally:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = -1
        _remove_if_empty(self._created)


def acquire(folder: Path, owner: str, create: bool = True) -> FolderLock:
    """Locks ``folder`` (creating it and its parents when ``create``) for this process; a folder locked by
    another process is a UserError naming that process's id."""
    folder = Path(folder)
    path = folder / LOCK_FILE
    created: list[Path] = []
    for _ in range(_ATTEMPTS):
        if create:
            created += [made for made in _make_folders(folder) if made not in created]
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            if create:
                continue  # a releasing holder removed the folder it had created: make it again
            raise UserError(f"{folder}: no such folder") from None
        except OSError as error:
            _remove_if_empty(created)
            raise UserError(f"cannot lock {folder} ({error.strerror}): is it writable?") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = _read_holder(fd) if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN) else None
            os.close(fd)
            _remove_if_empty(created)
            if holder is None:
                raise UserError(f"cannot lock {folder} ({error.strerror})") from None
            raise UserError(f"{folder} is in use by {holder}; wait for it to end or stop it, or choose "
                            "another folder") from None
        if _is_current(fd, path):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {owner}\n".encode())
            return FolderLock(folder, fd, created)
        os.close(fd)  # we locked a file its holder had just unlinked: try the new one
    _remove_if_empty(created)
    raise UserError(f"cannot lock {folder}: its lock file keeps changing; is another program replacing it?")


@contextmanager
def locked(folder: Path, owner: str, create: bool = True) -> Iterator[FolderLock]:
    """``acquire``, held for the block."""
    lock = acquire(folder, owner, create)
    try:
        yield lock
    finally:
        lock.release()


def _make_folders(folder: Path) -> list[Path]:
    """Creates ``folder`` and missing parents; returns the ones created, outermost first."""
    missing = []
    for candidate in [folder, *folder.parents]:
        if candidate.exists():
            break
        missing.append(candidate)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {folder} ({error.strerror})") from None
    return list(reversed(missing))


def _remove_if_empty(created: list[Path]) -> None:
    for folder in reversed(created):  # innermost first; stop at the first that holds something
        try:
            folder.rmdir()
        except OSError:
            return


def _is_current(fd: int, path: Path) -> bool:
    """Whether the locked descriptor is still the file at ``path`` (not one its holder unlinked)."""
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (at_path.st_dev, at_path.st_ino)


def _read_holder(fd: int) -> str:
    """'process PID (PROGRAM)' from the lock file; its holder may not have written it yet."""
    deadline = time.monotonic() + _HOLDER_WAIT_S
    while True:
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        pid, _, owner = text.partition(" ")
        if pid.isdigit():
            return f"process {pid}" + (f" ({owner})" if owner else "")
        if time.monotonic() > deadline:
            return "another process"
        time.sleep(0.05)
