"""``--aug gradmix`` and ``--aug gradcam-mix``: the mixed view placed where the CAM of L_con is highest.

The step's side of GradMix (DESIGN.md section 2, steps 2-8): this strategy owns the ``CamCapture`` on the
CAM layers (armed for the clean forward only), takes the CAM gradient G = dL_con/dA after the clean loss,
and hands the first view's activations and gradients to ``fastgradmix.gradmix.augment.gradmix_view``,
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

import torch
from torch import nn

from fastgradmix.gradmix.augment import GradMixRecipe, MixedView, gradmix_view
from fastgradmix.gradmix.capture import CamCapture
from fastgradmix.gradmix.ops import resolve_ops
from fastgradmix.training.mixed_views.base import MixedViewStrategy

__all__ = ["CAM_VARIANTS", "CamGuidedMix"]

CAM_VARIANTS = {"gradmix": "layercam", "gradcam-mix": "gradcam"}  # --aug name -> the CAM's channel weighting


class CamGuidedMix(MixedViewStrategy):
    """GradMix's mixed view. ``module`` is the bare model (not a DDP wrapper): the CAM hooks go on its layers."""

    makes_view = True
    uses_cam = True

    def __init__(self, aug: str, cfg, module: nn.Module, device: torch.device):
        super().__init__(aug, cfg, module, device)
        self.variant = CAM_VARIANTS[aug]
        self.module = module
        self.exact = cfg.cam_grad == "exact"
        self.backpropagates_clean_loss = not self.exact
        self.gamma_range = (cfg.gamma_min, cfg.gamma_max)
        self.recipe = GradMixRecipe.from_config(cfg)  # the paper's form, or published variants (FIDELITY.md)
        self.capture = CamCapture(module, cfg.cam_layer_list(), keep_grads=not self.exact)
        self.ops = resolve_ops(cfg.gradmix_backend, device)
        self._gradients: list[torch.Tensor] | None = None  # G of this step, per layer (B, C_l, h_l, w_l)

    @property
    def cam_modules(self) -> list[nn.Module]:
        return [self.module.cam_module(name) for name in self.capture.layer_names]

    def arm(self) -> None:
        self.capture.arm()

    def disarm(self) -> None:
        self.capture.disarm()

    def cam_gradient(self, clean_loss: torch.Tensor, scaler: torch.amp.GradScaler) -> None:
        """G = dL/dA at the CAM layers, kept for ``make``; L is L_con, or under ``--cam-loss self-supervised``
        the self-supervised term the step passes instead (exact mode only). Under DDP, G is the world size
        times the single-process gradient; the CAM is normalised, per image or per batch, so it drops out."""
        activations = self.capture.activations
        if self.exact:
            self._gradients = torch.autograd.grad(scaler.scale(clean_loss), activations, retain_graph=True)
        else:  # accumulates L_con's parameter gradients (locally: the step runs this under no_sync)
            scaler.scale(clean_loss).backward()
            self._gradients = self.capture.gradients

    def make(self, view1: torch.Tensor, generator: torch.Generator) -> MixedView:
        """Steps 3-8 from the captured tensors: the first view's half (the clean forward may hold 2N rows),
        or all rows for ``--cam-norm batch``, whose normalisation spans the whole batch as the published code's."""
        rows = slice(None) if self.recipe.cam_norm == "batch" else slice(0, view1.shape[0])
        cam_acts = [a[rows].detach() for a in self.capture.activations]  # each (B, C_l, h_l, w_l), B = N or 2N
        cam_grads = [g[rows].detach() for g in self._gradients]
        self._gradients = None
        return gradmix_view(view1, cam_acts, cam_grads, self.variant, self.gamma_range, generator, self.ops,
                            self.recipe)
