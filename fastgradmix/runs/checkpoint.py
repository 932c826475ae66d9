"""Checkpoints of a run (last.pt, epoch_XXX.pt): written atomically, loaded without running code.

Checkpoints hold only tensors and plain Python values, so they load with ``weights_only=True``; a crash
or Ctrl-C while saving leaves the previous checkpoint intact (``common.files.atomic_write``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fastgradmix.common.errors import UserError
from fastgradmix.common.files import atomic_write


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda handle: torch.save(state, handle))


def load_checkpoint(path: Path, map_location="cpu") -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}: start a new run without --resume, or point --out at "
                        "the run to continue")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for corrupt files
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot read checkpoint {path} ({first_line}); it is corrupt or not a "
                        "fastgradmix checkpoint: start a new run with --overwrite") from None
