"""TensorBoard output, shared by ``fastgradmix.train --tensorboard`` and ``fastgradmix.evaluate --tensorboard``.

The ``tensorboard`` package is optional (``pip install 'fastgradmix[tensorboard]'``): ``require_tensorboard``
is called while the options are checked, so a missing package ends as one line and exit code 2 before
anything is written. Event files go to ``<run folder>/tb/`` (``tensorboard --logdir runs`` lists every
run); like metrics.jsonl they are appended to as the run goes, not written atomically.
"""

from __future__ import annotations

import importlib.util
import io
import numbers
from pathlib import Path

import numpy as np
from PIL import Image

from fastgradmix.common.errors import UserError

__all__ = ["EVENTS_FOLDER", "add_numbers", "add_png", "open_writer", "require_tensorboard"]

EVENTS_FOLDER = "tb"  # under the run folder


def require_tensorboard(option: str = "--tensorboard") -> None:
    """UserError (exit 2) with the install command when the tensorboard package is absent."""
    if importlib.util.find_spec("tensorboard") is None:
        raise UserError(f"{option} needs the tensorboard package: pip install 'fastgradmix[tensorboard]' "
                        "(or pip install tensorboard)")


def open_writer(run_dir: Path):
    """A SummaryWriter on ``run_dir/tb`` (created); a resumed run adds a new event file beside the old."""
    require_tensorboard()
    from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when asked for

    return SummaryWriter(log_dir=str(Path(run_dir) / EVENTS_FOLDER))


def add_numbers(writer, prefix: str, values: dict, step: int, skip: tuple[str, ...] = ()) -> list[str]:
    """One scalar per number in ``values`` (nested dicts become tag paths: prefix/a/b); None, booleans,
    strings, lists and the keys in ``skip`` (at any depth) are left out. Returns the tags written."""
    tags = []
    for key, value in values.items():
        tag = f"{prefix}/{key}"
        if key in skip:
            continue
        if isinstance(value, dict):
            tags += add_numbers(writer, tag, value, step, skip)
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            writer.add_scalar(tag, float(value), step)
            tags.append(tag)
    return tags


def add_png(writer, tag: str, png: bytes, step: int) -> None:
    """A PNG (a report figure, as plots.py draws it) as an image: decoded to RGB (H, W, 3) uint8."""
    with Image.open(io.BytesIO(png)) as picture:
        pixels = np.asarray(picture.convert("RGB"))  # (H, W, 3)
    writer.add_image(tag, pixels, step, dataformats="HWC")
