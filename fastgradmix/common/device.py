"""The one rule for ``--device {auto,cpu,cuda}`` in every tool."""

from __future__ import annotations

import torch

from fastgradmix.common.errors import UserError


def resolve_device(name: str, cuda_usable: bool = True) -> torch.device:
    """``auto``: CUDA when a device is visible (and ``cuda_usable``: e.g. a model folder has a CUDA
    program), else the CPU. ``cuda`` without a visible device is a one-line error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible; use --device cpu (or auto)")
    if name == "auto":
        name = "cuda" if (cuda_usable and torch.cuda.is_available()) else "cpu"
    if name not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: choose auto, cpu or cuda")
    return torch.device(name)
