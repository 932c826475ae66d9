"""``--cam-schedule epoch``: GradMix with the paper's schedule, boxes found in one epoch and pasted in the next.

The paper finds the activated areas "after each epoch" and masks them in the next; the published code (and
``--cam-schedule step``, the default) recomputes the CAM in every step instead. Here each image's box comes
from the CAM of its previous epoch and is kept on the device in a ``BoxTable`` indexed by the dataset row that
every loader yields with its batches:

1. the clean forward (CAM layers captured) and L_con, as always;
2. the mixed view of v1 pastes a fresh partner (or noise) into each image's *kept* box (``BoxTable.lookup``):
   no CAM gradient pass, no window search before it;
3. the step's one backward records the gradient at the CAM layers on its way (as ``--cam-grad detached``
   does): under ``--cam-grad exact`` that of the step's whole loss L_con + lambda mean(w l_mix), under
   ``--cam-grad detached`` that of L_con alone (its first backward);
4. after it, the CAM of v1 from those tensors places the images' boxes for their next epoch (box sides drawn
   now, window search or hottest pixel as ``--box-position``), overwriting their rows (``BoxTable.record``).

The first epoch (and an image the previous epochs never showed, e.g. one dropped with the last partial batch)
has no kept box: the step then trains L_con alone (no mixed view, mix logged as 0) while its backward records
the boxes -- the schedule's "no mixed view in epoch 0" reading, chosen over a first epoch on the step
schedule so that every pasted box really comes from an earlier epoch. Draws per step from the GradMix
generator: partners (or noise), then the box sides. Nothing is read back to the host; under torchrun the
ranks merge their shards' rows at each epoch's end (box_table.py); the table is part of last.pt.
"""

from __future__ import annotations

import torch
from torch import nn

from fastgradmix.gradmix.augment import MixedView
from fastgradmix.training.mixed_views.box_table import BoxTable
from fastgradmix.training.mixed_views.cam_guided import CamGuidedMix

__all__ = ["EpochCamMix"]


class EpochCamMix(CamGuidedMix):
    """``--aug gradmix|gradcam-mix --cam-schedule epoch``: pastes last epoch's boxes, records this epoch's."""

    state_key = "cam_boxes"
    works_after_backward = True

    def __init__(self, aug: str, cfg, module: nn.Module, device: torch.device, num_images: int):
        super().__init__(aug, cfg, module, device)
        self.device = device
        self.table = BoxTable(num_images, device)
        self.pasting = False  # False in the first epoch: no box is kept yet

    def mixer_cam_grad(self, cfg) -> str:
        return "detached"  # the mixer keeps the gradient the step's backward records at the CAM layers

    @property
    def backpropagates_clean_loss(self) -> bool:
        # --cam-grad detached: L_con's own backward first (clean features detached in l_mix); without a mixed
        # view (epoch 0) the step's single backward of L_con records G
        return not self.exact and self.pasting

    def cam_gradient(self, clean_loss: torch.Tensor, scaler: torch.amp.GradScaler) -> None:
        """No CAM pass: G is recorded by the step's backward (here only --cam-grad detached's L_con backward)."""
        if self.backpropagates_clean_loss:
            scaler.scale(clean_loss).backward()

    def make(self, view1: torch.Tensor, generator: torch.Generator,
             indices: torch.Tensor | None = None) -> MixedView | None:
        """view1 (N, C, H, W) with fresh partners pasted into the images' kept boxes; None in the first epoch."""
        if not self.pasting:
            return None
        return self.mixer.paste(view1, self.table.lookup(_rows(indices, self.device)), generator)

    def after_backward(self, view1: torch.Tensor, generator: torch.Generator, indices: torch.Tensor | None) -> None:
        """The boxes of the images' next epoch, from this step's captured activations and recorded gradient."""
        self.table.record(_rows(indices, self.device), self.mixer.find_boxes(view1, generator))

    def begin_epoch(self, epoch: int) -> None:
        self.pasting = epoch > 0

    def end_epoch(self) -> None:
        self.table.merge_ranks()

    def state_dict(self) -> dict:
        return self.table.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.table.load_state_dict(state)


def _rows(indices: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    if indices is None:
        raise ValueError("--cam-schedule epoch needs the dataset rows of every batch (the loaders' indices)")
    return indices.to(device, non_blocking=True)
