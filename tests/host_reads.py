"""A test guard that fails on any host read of tensor data (the ops behind .item(), bool(), masks)."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class ForbidHostReads(TorchDispatchMode):
    """Fails on every aten op that reads tensor data back to the host or has a data-dependent shape.

    ``_local_scalar_dense`` is behind ``.item()``, ``bool(t)`` and ``int(t)``; ``nonzero`` and the ops
    tagged ``dynamic_output_shape`` (masked_select, unique, boolean-mask ``index``) need the data to
    know their output size. Integer advanced indexing shares ``index.Tensor`` but is shape-static, so it
    is let through.
    """

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tags = set(func.tags)
        if func.overloadpacket is torch.ops.aten.index:
            indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
            if any(t is not None and t.dtype in (torch.bool, torch.uint8) for t in indices):
                raise AssertionError(f"host read: boolean-mask indexing ({func})")
        elif (func.overloadpacket in (torch.ops.aten._local_scalar_dense, torch.ops.aten.nonzero)
              or torch.Tag.data_dependent_output in tags or torch.Tag.dynamic_output_shape in tags):
            raise AssertionError(f"host read: {func}")
        return func(*args, **kwargs)


def assert_no_host_read(fn, *tensors):
    """Runs fn under the dispatch guard, then on meta copies: meta tensors have no data at all, so any
    read that bypasses the dispatcher (``.tolist()``, ``.numpy()``) fails there."""
    with ForbidHostReads():
        fn(*tensors)
    fn(*(t.to("meta") for t in tensors))
