"""Which implementation runs GradMix's three heavy operations: the Triton kernels or the PyTorch reference.

The operations are ``layercam`` (step 3), ``window_argmax`` (step 5) and ``paste_resized`` (step 7) of
DESIGN.md section 2. ``--gradmix-backend auto`` picks the Triton kernels (fastgradmix/kernels) for CUDA
tensors when they import, and the batched reference (reference.py) everywhere else; both take the same
arguments, checked by checks.py. The kernels are imported by name, lazily, so that this package imports
without Triton.
"""

from __future__ import annotations

import importlib
import os
from types import SimpleNamespace

import torch

from fastgradmix.common.errors import UserError
from fastgradmix.gradmix import reference

__all__ = ["resolve_ops"]


def _triton_ops() -> SimpleNamespace | None:
    try:
        return SimpleNamespace(
            layercam=importlib.import_module("fastgradmix.kernels.layercam").layercam,
            window_argmax=importlib.import_module("fastgradmix.kernels.window_argmax").window_argmax,
            paste_resized=importlib.import_module("fastgradmix.kernels.paste").paste_resized,
        )
    except ImportError:
        return None


def resolve_ops(backend: str, device: torch.device) -> SimpleNamespace:
    """``auto``: Triton kernels for CUDA tensors when available, the PyTorch reference otherwise."""
    reference_ops = SimpleNamespace(layercam=reference.layercam, window_argmax=reference.window_argmax,
                                    paste_resized=reference.paste_resized)
    if backend == "reference":
        return reference_ops
    triton_ops = _triton_ops()
    if backend == "triton":
        if triton_ops is None:
            raise UserError("--gradmix-backend triton: the Triton kernels cannot be imported "
                            "(is triton installed? pip install triton)")
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise UserError(f"--gradmix-backend triton needs a CUDA device, not {device.type} "
                            "(or TRITON_INTERPRET=1 to run the kernels slowly in Triton's interpreter)")
        return triton_ops
    if backend != "auto":
        raise UserError(f"unknown GradMix backend {backend!r}: choose auto, triton or reference")
    return triton_ops if (device.type == "cuda" and triton_ops is not None) else reference_ops
