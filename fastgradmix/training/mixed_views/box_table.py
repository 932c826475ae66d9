"""``--cam-schedule epoch``'s memory: the GradMix box found for each training image, kept until its next epoch.

One row per image of the training set (the dataset index every loader yields with its batches), on the
device: the box corner and sides (int16: image sides stay far below 32768) and the mix weight w_i (fp32),
13 bytes per image with its flags -- far less than a CAM map would take. A step reads the rows of its
images (``lookup``, before its mixed view) and overwrites them with the boxes its own backward placed
(``record``, after it); every image comes at most once per epoch, so the read always sees the box of the
image's previous epoch. Both are index gathers and scatters on the device: no host read.

Under torchrun each rank records its shard's rows in its own full-size copy; the shards are drawn anew
every epoch, so ``merge_ranks`` (at the epoch's end, outside the steps) sums each rank's freshly recorded
rows into every copy: the shards are disjoint, so the sum is the one rank's box. ``state_dict`` goes into
last.pt, so a resumed run pastes the same boxes.
"""

from __future__ import annotations

import torch

from fastgradmix.distributed import collectives
from fastgradmix.gradmix.augment import CamBoxes

__all__ = ["BoxTable"]

_BOX_FIELDS = ("top", "left", "box_h", "box_w")  # int16 rows
_FIELDS = (*_BOX_FIELDS, "weight", "known")


class BoxTable:
    """The latest box of every training image: ``lookup(indices)``, ``record(indices, boxes)``."""

    def __init__(self, num_images: int, device: torch.device):
        if num_images < 1:
            raise ValueError(f"BoxTable needs at least one image (got {num_images})")
        self.num_images = num_images
        for name in _BOX_FIELDS:  # (N,) int16 each
            setattr(self, name, torch.zeros(num_images, dtype=torch.int16, device=device))
        self.weight = torch.zeros(num_images, dtype=torch.float32, device=device)  # (N,) w_i of the kept box
        self.known = torch.zeros(num_images, dtype=torch.bool, device=device)  # (N,) a box was ever recorded
        self.fresh = torch.zeros(num_images, dtype=torch.bool, device=device)  # (N,) recorded in this epoch

    def lookup(self, indices: torch.Tensor) -> CamBoxes:
        """The kept boxes of images ``indices`` (B,) int64: (B,) int64 corners and sides, (B,) fp32 weights.
        An image without a box yet gets sides 0 (nothing is pasted) and weight 0 (no mix term)."""
        known = self.known[indices]  # (B,)
        top, left, box_h, box_w = (getattr(self, name)[indices].to(torch.int64) * known for name in _BOX_FIELDS)
        return CamBoxes(top, left, box_h, box_w, self.weight[indices] * known, may_be_empty=True)

    def record(self, indices: torch.Tensor, boxes: CamBoxes) -> None:
        """Keeps ``boxes`` (B rows) as the latest of images ``indices`` (B,) int64, distinct."""
        for name in _BOX_FIELDS:
            getattr(self, name)[indices] = getattr(boxes, name).to(torch.int16)
        self.weight[indices] = boxes.weights.to(torch.float32)
        self.known[indices] = True
        self.fresh[indices] = True

    def merge_ranks(self) -> None:
        """At an epoch's end: every rank's copy takes the rows any rank recorded in the epoch (one all-reduce
        per field; a no-op but the fresh flags' reset in a single process)."""
        if collectives.is_distributed():
            fresh = collectives.all_reduce_sum(self.fresh.to(torch.int32)) > 0  # (N,) recorded on some rank
            for name in (*_BOX_FIELDS, "weight"):
                field = getattr(self, name)
                # int32 / fp32 sums: each row has one recording rank, the others add 0
                mine = torch.where(self.fresh, field, torch.zeros_like(field)).to(
                    torch.float32 if name == "weight" else torch.int32)
                summed = collectives.all_reduce_sum(mine).to(field.dtype)
                setattr(self, name, torch.where(fresh, summed, field))
            self.known |= fresh
        self.fresh.zero_()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The table for last.pt (host copies)."""
        return {name: getattr(self, name).cpu() for name in _FIELDS}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restores ``state_dict``'s table; one of another size or type raises ValueError (KeyError: missing)."""
        for name in _FIELDS:
            current, saved = getattr(self, name), state[name]
            if not isinstance(saved, torch.Tensor) or saved.shape != current.shape or saved.dtype != current.dtype:
                shape = tuple(saved.shape) if isinstance(saved, torch.Tensor) else type(saved).__name__
                raise ValueError(f"--cam-schedule epoch's box table {name} is {shape}, this run needs "
                                 f"{tuple(current.shape)} {current.dtype}")
            current.copy_(saved)
        self.fresh.zero_()
