"""When a torchrun rank dies (kill -9, the OOM killer, a crash, a rank that stopped on its own error), the
other ranks end with one line each naming it, not with gloo's traceback.

At start every rank learns each rank's host and process id (one all_gather_object). Then, if the run
fails with a collective error, or with torchrun's SIGTERM (torchrun stops the remaining ranks once one
has died, possibly before they reach a collective), each rank looks up which of its peers on the same
host has ended and stops with ``PeerLost``: "rank 0 of 2: lost rank 1 (pid 4242, ended) ...". A peer on
another host cannot be looked up; the line then names the error instead.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch.distributed as torch_dist

from fastgradmix.common.errors import UserError

_peers: list[tuple[str, int]] = []  # (host, pid) of each rank, in rank order
_EXIT_WAIT_S = 2.0


class PeerLost(UserError):
    """This rank stops because another rank of the torchrun job is gone (exit code 1: not the user's input)."""

    exit_code = 1


class _Terminated(BaseException):
    """torchrun's SIGTERM, raised where the rank is (a BaseException: no ``except Exception`` swallows it)."""


def record_peers() -> None:
    """Every rank's (host, pid), gathered once right after the process group starts."""
    gathered: list = [None] * torch_dist.get_world_size()
    torch_dist.all_gather_object(gathered, (socket.gethostname(), os.getpid()))
    _peers[:] = [tuple(entry) for entry in gathered]


def _has_ended(pid: int) -> bool:
    """Whether the process is gone or a zombie (dead, not yet reaped by torchrun)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def lost_peers() -> list[tuple[int, int]]:
    """(rank, pid) of the other ranks on this host whose process has ended."""
    me = torch_dist.get_rank() if torch_dist.is_initialized() else -1
    host = socket.gethostname()
    return [(rank, pid) for rank, (peer_host, pid) in enumerate(_peers)
            if rank != me and peer_host == host and _has_ended(pid)]


def _describe(error: BaseException) -> str | None:
    """The one line for a failure caused by a lost peer, or None when this failure is something else."""
    if not _peers:
        return None
    me, world = torch_dist.get_rank(), len(_peers)
    collective_error = isinstance(error, torch_dist.DistError) or (
        isinstance(error, RuntimeError) and any(text in str(error) for text in ("gloo", "Connection", "NCCL")))
    lost = lost_peers()
    deadline = time.monotonic() + _EXIT_WAIT_S
    while not lost and (collective_error or isinstance(error, _Terminated)) and time.monotonic() < deadline:
        time.sleep(0.05)  # a killed process closes its sockets a moment before it shows as ended
        lost = lost_peers()
    if lost:
        names = ", ".join(f"rank {rank} (pid {pid})" for rank, pid in lost)
        return (f"rank {me} of {world}: lost {names}, which ended; this rank stops too (checkpoints are written "
                "atomically: continue with --resume once the cause is fixed)")
    if isinstance(error, _Terminated):
        return f"rank {me} of {world}: stopped by SIGTERM (torchrun stops every rank when one of them fails)"
    if collective_error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"rank {me} of {world}: lost contact with another rank ({first_line[:200]})"
    return None


def _raise_terminated(signum, frame) -> None:
    raise _Terminated()


@contextmanager
def peer_loss_guard() -> Iterator[None]:
    """Turns a failure caused by a lost rank (a collective error, or torchrun's SIGTERM) into PeerLost."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        yield
    except (Exception, _Terminated) as error:
        if isinstance(error, UserError):
            raise  # this rank's own one-line error
        if in_main_thread:  # stopping anyway: torchrun's SIGTERM must not cut the look-up or the line short
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        message = _describe(error)
        if message is None:
            raise  # a bug of this rank: its traceback (the finally below restores SIGTERM)
        previous = None
        raise PeerLost(message) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
