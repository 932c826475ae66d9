"""``--tensorboard`` for a training run: what metrics.jsonl holds, a picture of the augmentation, the result.

Rank 0 writes, to runs/NAME/tb/ (common/tensorboard.py), at the points where the loop already reads values
back, so the option adds no host synchronisation to the steps:

- every metrics.jsonl line: each loss term as ``loss/<term>`` (loss, supcon, simclr, moco, mix), and
  ``train/<field>`` for lr, images_per_s, step_ms, augment_share, cam_grad_share, peak_memory_mib (and
  overflow_skipped_steps under fp16), at the line's step;
- after every epoch: ``gradmix/views``, a grid of the last step's mixed views with their boxes outlined
  (the mixed-view strategies without boxes, mixup, show their images alone; ``--aug none`` shows none);
- at the end: ``final/<metric>`` for auroc, closed_acc, openness, train_wall_s and images_per_s of
  results.json, and ``final/roc``, the ROC curve as the report draws it (open-set protocols).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import make_grid

from fastgradmix.common.tensorboard import add_numbers, add_png, open_writer
from fastgradmix.evaluation.plots import roc_png

__all__ = ["TrainingTensorBoard", "view_grid"]

GRID_IMAGES = 16  # views in the epoch's grid
BOX_COLOUR = (1.0, 0.1, 0.1)  # red outline, in [0, 1] RGB
FINAL_METRICS = ("auroc", "closed_acc", "openness", "train_wall_s", "images_per_s")  # of results.json


def view_grid(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...],
              boxes: tuple[torch.Tensor, ...] | None = None, min_side: int = 64) -> torch.Tensor:
    """Normalised views (N, C, H, W) -> one uint8 RGB grid (3, H', W'), boxes (top, left, box_h, box_w),
    each (N,), outlined one pixel wide (the outline covers the box's border pixels). Images smaller than
    ``min_side`` are enlarged by an integer factor (nearest neighbour) first, so a 16 px digit stays visible."""
    pixels = images.detach().float().cpu()
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    pixels = (pixels * std_t + mean_t).clamp(0, 1)  # (N, C, H, W) in [0, 1]
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    scale = max(1, -(-min_side // max(pixels.shape[-2:])))  # ceil(min_side / side)
    if scale > 1:  # enlarge first, so the outline stays one pixel wide over the pasted content
        pixels = F.interpolate(pixels, scale_factor=scale, mode="nearest")
    n, _, height, width = pixels.shape
    if boxes is not None:
        top, left, box_h, box_w = (b.detach().cpu().view(n, 1, 1) * scale for b in boxes)  # each (N, 1, 1)
        rows = torch.arange(height).view(1, height, 1)
        cols = torch.arange(width).view(1, 1, width)
        inside = (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)  # (N, H, W)
        interior = (rows > top) & (rows < top + box_h - 1) & (cols > left) & (cols < left + box_w - 1)
        outline = (inside & ~interior).unsqueeze(1)  # (N, 1, H, W)
        colour = torch.tensor(BOX_COLOUR).view(1, 3, 1, 1)
        pixels = torch.where(outline, colour, pixels)
    grid = make_grid(pixels, nrow=8, padding=2, pad_value=1.0)  # (3, H', W')
    return (grid * 255).round().to(torch.uint8)


class TrainingTensorBoard:
    """The run's event files; made on rank 0 only, once the run folder exists."""

    def __init__(self, run_dir: Path, mean: tuple[float, ...], std: tuple[float, ...]):
        self.writer = open_writer(run_dir)
        self.mean, self.std = tuple(mean), tuple(std)

    def log_window(self, record: dict, loss_names: list[str]) -> None:
        """One metrics.jsonl line: its loss terms and the other numbers, at its step."""
        step = record["step"]
        add_numbers(self.writer, "loss", {name: record[name] for name in loss_names}, step)
        others = {key: value for key, value in record.items() if key not in (*loss_names, "epoch", "step")}
        add_numbers(self.writer, "train", others, step)
        self.writer.flush()  # a run stopped by --stop-after, or by an error, keeps what it logged

    def log_views(self, view, step: int) -> None:
        """The grid of a step's mixed view (``.images``, and the boxes when the view has them)."""
        if view is None:
            return
        count = min(GRID_IMAGES, view.images.shape[0])
        boxes = None
        if all(hasattr(view, name) for name in ("top", "left", "box_h", "box_w")):
            boxes = tuple(getattr(view, name)[:count] for name in ("top", "left", "box_h", "box_w"))
        self.writer.add_image("gradmix/views", view_grid(view.images[:count], self.mean, self.std, boxes), step)
        self.writer.flush()

    def log_final(self, results: dict, known_scores, unknown_scores, step: int) -> None:
        """results.json's metrics as final/<key> (FINAL_METRICS; auroc is null, so absent, for closed-set
        protocols), and the open-set ROC curve (when there are unknowns)."""
        add_numbers(self.writer, "final", {key: results[key] for key in FINAL_METRICS if key in results}, step)
        if known_scores is not None and len(unknown_scores) > 0:
            png = roc_png([("known vs unknown", known_scores, unknown_scores)], "open-set recognition")
            add_png(self.writer, "final/roc", png, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
