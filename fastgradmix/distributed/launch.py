"""Running under torchrun: the process group, the DDP wrapper, and errors that end every rank together.

``torchrun --nproc_per_node=K -m fastgradmix.train ...`` starts K processes with RANK, WORLD_SIZE and
LOCAL_RANK in their environment. ``process_group`` then initialises torch.distributed (nccl on GPUs, each
rank on cuda:LOCAL_RANK; gloo on CPU) and destroys it at the end, also on error; without those variables
everything here is a no-op and the run is the single-process one.

Roles: every rank trains on its shard of each global batch (data/loaders/sharding.py) and computes the same
evaluation; rank 0 alone prints and writes the run folder. A setup step that can fail with a UserError
(a run folder that already holds a run, a checkpoint that does not fit, bad data) runs under ``agreed``:
the ranks exchange their outcome, so either all continue or all stop with the same one-line message
(printed by rank 0), before rank 0 writes anything. A failure that is not agreed (a bug, CUDA out of
memory on one rank) ends that process; torchrun then stops the others, and each of them ends with one
line naming the rank that was lost (distributed/peers.py).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from fastgradmix.common.errors import UserError
from fastgradmix.distributed import peers
from fastgradmix.distributed.collectives import is_distributed, is_main_process, world_size

T = TypeVar("T")

LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")  # what torchrun (torch.distributed.run) sets


class AgreedError(UserError):
    """A UserError that every rank raises together; only rank 0 prints it."""


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in LAUNCH_VARIABLES)


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def rank_device(device: torch.device) -> torch.device:
    """Under torchrun a CUDA run uses the GPU of this process's local rank; anything else is unchanged."""
    if device.type != "cuda" or not launched_by_torchrun():
        return device
    index = local_rank()
    if index >= torch.cuda.device_count():
        raise UserError(f"torchrun started local rank {index}, but only {torch.cuda.device_count()} CUDA "
                        "devices are visible: lower --nproc_per_node")
    return torch.device("cuda", index)


@contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """torch.distributed for the duration of the block when launched by torchrun (else nothing)."""
    if not launched_by_torchrun() or is_distributed():
        yield
        return
    if device.type == "cuda":
        if not torch_dist.is_nccl_available():
            raise UserError("this PyTorch build has no NCCL: run several GPUs with a CUDA build of PyTorch, "
                            "or pass --device cpu (gloo)")
        torch.cuda.set_device(device)  # nccl's collectives and barriers use the current device
        backend = "nccl"
    else:
        backend = "gloo"
    torch_dist.init_process_group(backend)  # address, rank and size from torchrun's environment
    failed = True
    try:
        peers.record_peers()
        with peers.peer_loss_guard():  # a lost rank: one line per remaining rank (distributed/peers.py)
            yield
        failed = False
    finally:
        try:
            torch_dist.destroy_process_group()
        except Exception:
            if not failed:  # after a lost rank, tearing down may fail too; the one line already says why
                raise


def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``model`` when distributed (else the model itself).

    find_unused_parameters=False: every step's one reduced backward reaches every parameter (each method
    runs the whole model, projection head included), so DDP need not search the graph. broadcast_buffers=
    False: BatchNorm is per rank (statistics of the rank's part of the batch); with True, DDP would
    overwrite the running statistics in place before each forward, between the clean and mixed forwards
    of one step whose backward still needs them. The running statistics of rank 0 are the model's:
    checkpoints hold them, and ``broadcast_buffers`` copies them to every rank before evaluating.
    """
    if not is_distributed():
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    # newer PyTorch renamed the per-forward part of broadcast_buffers (and deprecated the old name); it then
    # still syncs the buffers once at construction, which only makes every rank start from rank 0's
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
        no_buffer_sync = {"forward_sync_buffers": False}
    else:
        no_buffer_sync = {"broadcast_buffers": False}
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=False, **no_buffer_sync)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a DDP wrapper (state_dict keys without ``module.``, the CAM layers)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def agreed(work: Callable[[], T]) -> T:
    """Runs ``work`` on every rank; if it raises a UserError on any rank, every rank raises AgreedError
    with the message of the lowest failing rank. One small collective (all_gather_object) when distributed."""
    if not is_distributed():
        return work()
    result, message = None, None
    try:
        result = work()
    except UserError as err:
        message = str(err)
    messages: list[str | None] = [None] * world_size()
    torch_dist.all_gather_object(messages, message)
    failed = [text for text in messages if text is not None]
    if failed:
        raise AgreedError(failed[0])
    return result


def rank_zero_first(work: Callable[[], T]) -> T:
    """``work`` on rank 0, then on the other ranks: a download or a decoded-image cache is written once and
    read by the rest. Failures are agreed as in ``agreed``."""
    result = agreed(lambda: work() if is_main_process() else None)
    other = agreed(lambda: None if is_main_process() else work())
    return result if is_main_process() else other


def main_print(*args, **kwargs) -> None:
    """print on rank 0 only: one log, not one per process."""
    if is_main_process():
        print(*args, **kwargs)
