"""Collectives that work with or without torch.distributed: rank and world size, gathers for the losses,
means and broadcasts for logging and evaluation, the barrier.

Without an initialised process group everything degenerates to the single-process case (rank 0 of
a world of 1, gathers return their input), so the same loss code runs everywhere. With one, the
contrastive losses gather features *with gradient* and labels without, so SimCLR negatives and
SupCon positives span the global batch.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as torch_dist
from torch import nn

# recent PyTorch (2.14 here) deprecates torch.distributed.nn's all_gather for its functional collectives; it
# still works and is the autograd-aware gather that every supported version (>= 2.4) has: its warning is noise
warnings.filterwarnings("ignore", message="torch.distributed.nn.functional.all_gather is deprecated",
                        category=FutureWarning)


def is_distributed() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized()


def world_size() -> int:
    return torch_dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return torch_dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    return rank() == 0


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenates every rank's (n, ...) tensor into (world * n, ...), rank order, keeping gradients.

    The backward of torch.distributed.nn's all_gather sums each rank's gradient for a block back
    into the rank that owns it, so every rank's features receive the gradients of every rank's loss.
    All ranks must pass tensors of the same shape.
    """
    if not is_distributed():
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor))


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Like gather_with_grad, for tensors that need no gradient (labels, evaluation features)."""
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    torch_dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks of a tensor without gradient; a no-op in a single process."""
    if not is_distributed():
        return tensor
    total = tensor.clone()
    torch_dist.all_reduce(total)
    return total


def mean_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """The average over ranks of a tensor without gradient (the tensor itself in a single process)."""
    if not is_distributed():
        return tensor
    total = tensor.clone()
    torch_dist.all_reduce(total)
    return total / world_size()


@torch.no_grad()
def broadcast_buffers(model: nn.Module) -> None:
    """Every rank takes rank 0's buffers (BatchNorm running statistics); a no-op in a single process."""
    if is_distributed():
        for buffer in model.buffers():
            torch_dist.broadcast(buffer, src=0)


def barrier() -> None:
    if not is_distributed():
        return
    if torch_dist.get_backend() == "nccl":
        torch_dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        torch_dist.barrier()
