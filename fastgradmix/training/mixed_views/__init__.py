"""Mixed-view strategies, one per ``--aug`` name: the extra view of v1 whose loss is lambda * mean(w_i l_mix(i)).

- base.py: the interface the training step uses, and ``none`` (no mixed view);
- pixel.py: ``mixup`` and ``cutmix``, the baselines (partner and weights per image, no CAM);
- cam_guided.py: ``gradmix`` and ``gradcam-mix``, placed by the CAM of L_con (fastgradmix/gradmix does the
  mixing itself);
- epoch_boxes.py (with box_table.py): the same under ``--cam-schedule epoch``, each image's box found in its
  previous epoch.

``build_mixed_view(cfg, module, device, num_images)`` returns the strategy for ``cfg.aug``.
"""

from __future__ import annotations

import torch
from torch import nn

from fastgradmix.training.mixed_views.base import MixedViewStrategy, NoMixedView
from fastgradmix.training.mixed_views.cam_guided import CAM_VARIANTS, CamGuidedMix
from fastgradmix.training.mixed_views.epoch_boxes import EpochCamMix
from fastgradmix.training.mixed_views.pixel import PixelMix

__all__ = ["MIXED_VIEWS", "MixedViewStrategy", "build_mixed_view"]

# --aug name -> strategy class, called as cls(aug, cfg, module, device)
MIXED_VIEWS: dict[str, type[MixedViewStrategy]] = {
    "none": NoMixedView,
    "mixup": PixelMix,
    "cutmix": PixelMix,
    "gradcam-mix": CamGuidedMix,
    "gradmix": CamGuidedMix,
}


def build_mixed_view(cfg, module: nn.Module, device: torch.device, num_images: int | None = None) -> MixedViewStrategy:
    """The strategy for ``cfg.aug``; ``module`` is the bare model (CAM hooks), not a DDP wrapper;
    ``num_images``: the training set's size (the rows of ``--cam-schedule epoch``'s box table)."""
    if cfg.aug not in MIXED_VIEWS:
        raise ValueError(f"unknown --aug {cfg.aug!r}; choose one of {tuple(MIXED_VIEWS)}")
    if cfg.cam_schedule == "epoch" and cfg.aug in CAM_VARIANTS:
        if num_images is None:
            raise ValueError("--cam-schedule epoch needs the number of training images (TrainStep(num_images=))")
        return EpochCamMix(cfg.aug, cfg, module, device, num_images)
    return MIXED_VIEWS[cfg.aug](cfg.aug, cfg, module, device)
