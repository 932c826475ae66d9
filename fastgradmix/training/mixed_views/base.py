"""What the training step asks of a mixed-view strategy (``--aug``), and ``none``, the strategy without one.

A strategy makes the extra view m of the first clean view v1 whose loss enters as lambda * mean(w_i l_mix(i))
(DESIGN.md section 2), and tells the step what that needs around the clean pass:

- ``makes_view``: False for ``none`` (the step ends after L_con's backward);
- ``uses_cam``: the view is placed by a CAM, so the step times ``cam_gradient`` (its "cam_grad" section);
- ``arm()`` / ``disarm()``: around the clean forward (the CAM hooks capture only that forward);
- ``cam_gradient(clean_loss, scaler)``: step 2, G = dL_con/dA, inside the clean pass (CAM strategies);
- ``backpropagates_clean_loss``: ``cam_gradient`` already ran L_con's backward (``--cam-grad detached``),
  so the clean pass runs under DDP's ``no_sync``, l_mix sees the clean features detached and the final
  backward is lambda * mix alone;
- ``make(view1, generator, indices)``: steps 3-8, an object with ``.images`` (N, C, H, W) and ``.weights``
  (N,), or None for no mixed view in this step (``--cam-schedule epoch``'s first epoch);
- ``after_backward(view1, generator, indices)``: after the step's last backward (``--cam-schedule epoch``
  places the boxes of the images' next epoch there);
- ``begin_epoch(epoch)`` / ``end_epoch()``: around each epoch's steps (the end may talk to the other ranks);
- ``state_key``, ``state_dict()`` / ``load_state_dict()``: a strategy with state (``--cam-schedule epoch``'s
  boxes) names its entry of last.pt;
- ``cam_modules``: the modules the CAM hooks sit on, the boundaries of ``--compile``'s regions.

The base class is the "no mixed view" answer to each; the strategies override what they need.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MixedViewStrategy", "NoMixedView"]


class MixedViewStrategy:
    """Defaults of every strategy: no view, no CAM, nothing to capture."""

    makes_view = False
    uses_cam = False
    backpropagates_clean_loss = False
    works_after_backward = False  # after_backward does something (the step times it as "augment")
    state_key: str | None = None  # the checkpoint entry of a strategy with state

    def __init__(self, aug: str, cfg, module: nn.Module, device: torch.device):
        self.aug = aug  # the --aug name this strategy was built for

    @property
    def cam_modules(self) -> list[nn.Module]:
        """The modules whose outputs the CAM hooks capture (none without a CAM)."""
        return []

    def arm(self) -> None:
        """Called just before the clean forward."""

    def disarm(self) -> None:
        """Called just after the clean forward."""

    def cam_gradient(self, clean_loss: torch.Tensor, scaler: torch.amp.GradScaler) -> None:
        """Step 2, G = dL_con/dA; only CAM strategies (``uses_cam``) have one."""
        raise NotImplementedError(f"--aug {self.aug} uses no CAM")

    def make(self, view1: torch.Tensor, generator: torch.Generator, indices: torch.Tensor | None = None):
        """The mixed view of view1 (N, C, H, W): ``.images`` (N, C, H, W) and ``.weights`` (N,) fp32, or
        None for none in this step. ``indices`` (N,) int64: the images' rows of the training set."""
        raise NotImplementedError(f"--aug {self.aug} makes no mixed view")

    def after_backward(self, view1: torch.Tensor, generator: torch.Generator, indices: torch.Tensor | None) -> None:
        """Called after the step's last backward, before the optimizer step."""

    def begin_epoch(self, epoch: int) -> None:
        """Called before the first step of ``epoch`` (0-based; a resumed run calls it for its first epoch)."""

    def end_epoch(self) -> None:
        """Called after the last step of an epoch, before its checkpoint; on every rank."""

    def state_dict(self) -> dict:
        """The strategy's share of last.pt (under ``state_key``); nothing by default."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restores ``state_dict``'s share."""


class NoMixedView(MixedViewStrategy):
    """``--aug none``: the clean views only; the loss is L_con."""
