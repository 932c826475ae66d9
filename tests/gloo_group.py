"""Two-process gloo groups for the distributed tests (workers started with torch.multiprocessing)."""

from __future__ import annotations

import os
import socket

import torch.distributed as torch_dist


def free_port() -> int:
    """A TCP port nobody listens on now: the rendezvous port of one test's process group."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_gloo(rank: int, world_size: int, port: int) -> None:
    """Joins this worker to a gloo group on localhost:port (the caller destroys it in a finally)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch_dist.init_process_group("gloo", rank=rank, world_size=world_size)


def leave_gloo() -> None:
    """The end of a worker's successful body: a barrier, so no rank destroys its group while a peer is still
    in its last collective or writing its results (the suspected cause of a rare SIGABRT, "terminate called
    without an active exception", seen in rank 0 under full-suite load), then the caller's finally destroys."""
    torch_dist.barrier()
