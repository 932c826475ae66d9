"""Two-process gloo groups for the distributed tests (workers started with torch.multiprocessing).

`run_gloo_workers(body, args)` starts one process per rank, joins each to a gloo group and runs
`body(rank, *args)`. The numbers a test checks are whatever the bodies write to files; a body that
returns has finished its work. Under full-suite load on 2 cores rank 0 has been seen to abort while
*tearing the group down* ("terminate called without an active exception", SIGABRT, in CI after every
rank had written its results), so the runner judges a worker by whether its body finished, not by how
the process died afterwards: each rank writes a marker after a final barrier, leaves through
os._exit (skipping interpreter teardown with gloo threads alive), and a death after every marker was
written is not a failure. A body that raises, or a rank killed before its marker, still fails the test.
"""

from __future__ import annotations

import multiprocessing.connection
import os
import pickle
import socket
import tempfile

import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port nobody listens on now: the rendezvous port of one test's process group."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _marker(marker_dir: str, rank: int) -> str:
    return os.path.join(marker_dir, f"finished-rank{rank}")


def _rank_entry(rank: int, world_size: int, port: int, marker_dir: str, body, args: tuple) -> None:
    torch.set_num_threads(1)  # two workers on two cores; a forked child must not enter the parent's OpenMP pool
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch_dist.init_process_group("gloo", rank=rank, world_size=world_size)
    body(rank, *args)  # an exception propagates: torch.multiprocessing reports it to the parent
    torch_dist.barrier()  # no rank tears down while a peer is still in a collective
    with open(_marker(marker_dir, rank), "w"):
        pass
    torch_dist.destroy_process_group()
    os._exit(0)


def run_gloo_workers(body, args: tuple = (), world_size: int = 2, start_method: str = "spawn") -> None:
    """Runs body(rank, *args) in world_size processes of one gloo group; raises if any body did not finish."""
    with tempfile.TemporaryDirectory() as marker_dir:
        context = mp.start_processes(_rank_entry, args=(world_size, free_port(), marker_dir, body, args),
                                     nprocs=world_size, join=False, start_method=start_method)
        try:
            _wait_for(context, marker_dir, world_size)
        finally:
            for error_file in context.error_files:
                if error_file and os.path.exists(error_file):
                    os.unlink(error_file)


def _wait_for(context, marker_dir: str, world_size: int) -> None:
    """Returns once every rank finished its body; raises (killing the rest) as soon as one died without."""
    processes = context.processes
    while any(process.is_alive() for process in processes):
        multiprocessing.connection.wait([process.sentinel for process in processes], timeout=1.0)
        failed = [rank for rank, process in enumerate(processes)
                  if not process.is_alive() and not os.path.exists(_marker(marker_dir, rank))]
        if failed:  # a peer of a failed rank may wait in a collective for ever: stop them all
            for process in processes:
                process.kill()
                process.join()
            raise AssertionError(_failure(failed[0], processes[failed[0]].exitcode, context.error_files[failed[0]]))
    unfinished = [rank for rank in range(world_size) if not os.path.exists(_marker(marker_dir, rank))]
    if unfinished:
        rank = unfinished[0]
        raise AssertionError(_failure(rank, processes[rank].exitcode, context.error_files[rank]))


def _failure(rank: int, exitcode: int | None, error_file: str) -> str:
    """What went wrong in one rank: its Python traceback when it raised, else how it exited."""
    if os.path.exists(error_file) and os.path.getsize(error_file):
        with open(error_file, "rb") as handle:
            return f"rank {rank} raised:\n{pickle.load(handle)}"
    return f"rank {rank} exited with code {exitcode} before finishing its body"
