"""Atomic run files: write to a temporary file beside the target, then rename over it.

A crash or Ctrl-C while saving leaves the previous checkpoint intact. Checkpoints hold only tensors
and plain Python values, so they load with ``weights_only=True`` (no code runs on load).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from fastgradmix.common.errors import UserError


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    _atomic_write(path, lambda handle: torch.save(state, handle))


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


def write_json(path: Path, value: Any) -> None:
    text = json.dumps(value, indent=2, sort_keys=False) + "\n"
    _atomic_write(path, lambda handle: handle.write(text.encode()))
