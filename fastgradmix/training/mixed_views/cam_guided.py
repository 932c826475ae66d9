"""``--aug gradmix`` and ``--aug gradcam-mix``: the mixed view placed where the CAM of L_con is highest.

The step's side of GradMix (DESIGN.md section 2, steps 2-8), built on the drop-in API
(``fastgradmix.GradMix``, gradmix/mixer.py) that users call in their own loops: the mixer's capture is armed
for the clean forward only, the CAM gradient G = dL_con/dA is taken after the clean loss, and
``GradMix.mix`` hands the first view's activations and gradients to ``gradmix.augment.gradmix_view``,
which does the rest (CAM map, boxes, window search, partner, paste, weights). ``gradmix`` weighs the CAM by
LayerCAM, ``gradcam-mix`` (the vanilla ablation) by GradCAM.

Two ways to get G (``--cam-grad``):

- ``exact``: ``torch.autograd.grad(L_con, A, retain_graph=True)`` back-propagates from the loss down to the
  CAM layers only; the step then does one backward of L_con + lambda * mix. Under DDP this fills no
  parameter's .grad, so it starts no all-reduce (its backward through the losses' all-gather is a
  collective every rank runs).
- ``detached``: the full backward of L_con records G on the way (cheaper); l_mix then sees the clean
  features detached and the final backward is lambda * mix alone, so the objective is not the exact one.
  Under DDP that first backward must stay local (``backpropagates_clean_loss``: the step runs the clean
  pass under ``no_sync``) and the final backward all-reduces the sum of both.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch
from torch import nn

from fastgradmix.gradmix.augment import GradMixRecipe, MixedView
from fastgradmix.gradmix.mixer import GradMix
from fastgradmix.training.mixed_views.base import MixedViewStrategy

__all__ = ["CAM_VARIANTS", "CamGuidedMix"]

CAM_VARIANTS = {"gradmix": "layercam", "gradcam-mix": "gradcam"}  # --aug name -> the CAM's channel weighting


class CamGuidedMix(MixedViewStrategy):
    """GradMix's mixed view, through the drop-in API (``fastgradmix.GradMix``) that users call in their own
    loops. ``module`` is the bare model (not a DDP wrapper): the CAM hooks go on its layers."""

    makes_view = True
    uses_cam = True

    def __init__(self, aug: str, cfg, module: nn.Module, device: torch.device):
        super().__init__(aug, cfg, module, device)
        self.exact = cfg.cam_grad == "exact"
        self.recipe = GradMixRecipe.from_config(cfg)  # the paper's form, or published variants (FIDELITY.md)
        # the step passes its own generator (GRADMIX_STREAM of the run's seed) to every mix: no seed here
        self.mixer = GradMix(module, cfg.cam_layer_list(), gamma=(cfg.gamma_min, cfg.gamma_max),
                             cam=CAM_VARIANTS[aug], cam_grad=self.mixer_cam_grad(cfg), backend=cfg.gradmix_backend,
                             seed=0, recipe=self.recipe)
        self._capturing: AbstractContextManager | None = None
        self._cam_loss: torch.Tensor | None = None  # exact mode: the (scaled) loss whose CAM places the boxes

    def mixer_cam_grad(self, cfg) -> str:
        """How the mixer gets G: as --cam-grad says (the epoch schedule records it in the step's backward)."""
        return cfg.cam_grad

    @property
    def backpropagates_clean_loss(self) -> bool:
        return not self.exact

    @property
    def cam_modules(self) -> list[nn.Module]:
        return self.mixer.modules

    def arm(self) -> None:
        self._capturing = self.mixer.capture()
        self._capturing.__enter__()

    def disarm(self) -> None:
        if self._capturing is not None:
            self._capturing.__exit__(None, None, None)
            self._capturing = None

    def cam_gradient(self, clean_loss: torch.Tensor, scaler: torch.amp.GradScaler) -> None:
        """Prepares G = dL/dA at the CAM layers for ``make``; L is L_con, or under ``--cam-loss
        self-supervised`` the self-supervised term the step passes instead (exact mode only). Under DDP, G is
        the world size times the single-process gradient; the CAM is normalised, per image or per batch, so
        it drops out. Under fp16 the scaled loss: the CAM's normalisation removes the scale too."""
        if self.exact:  # mix takes autograd.grad of it down to the CAM layers only
            self._cam_loss = scaler.scale(clean_loss)
        else:  # accumulates L_con's parameter gradients (locally: the step runs this under no_sync)
            scaler.scale(clean_loss).backward()
            self._cam_loss = None

    def make(self, view1: torch.Tensor, generator: torch.Generator, indices: torch.Tensor | None = None) -> MixedView:
        """Steps 3-8 from the captured tensors (``GradMix.mix``): the first view's rows of the clean forward
        (which may hold 2N), or all rows for ``--cam-norm batch``."""
        loss, self._cam_loss = self._cam_loss, None
        return self.mixer.mix(view1, loss, generator)
