"""``--method ce``: the cross-entropy baseline, a linear classifier on the encoder's pooled features.

The model (models.ClassifierModel) maps the first view v1 (N images, the protocol's augmentation) to logits
(N, K) over the known classes; L_con is their mean cross-entropy, computed in fp32. There is no mixed view
(config.validate requires --aug none), so ``mix_per_sample`` is never called. Under torchrun each rank
averages over its own images and DDP averages the gradients over the ranks: with equal shares that is the
gradient of the global batch's mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastgradmix.training.objectives.base import Objective

__all__ = ["CrossEntropy"]


class CrossEntropy(Objective):
    """Mean cross-entropy of the classifier's logits on v1 (the second view is not used)."""

    def __init__(self, cfg, module: nn.Module | None = None):
        pass

    def clean_views(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        return view1  # (N, C, H, W): one view

    def clean_terms(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """features: the logits (N, K); labels (N,) in [0, K)."""
        ce = F.cross_entropy(features.float(), labels)
        return {"loss": ce, "ce": ce, "mix": torch.zeros_like(ce)}

    def mix_per_sample(self, z_mix: torch.Tensor, detach_clean: bool) -> torch.Tensor:
        raise NotImplementedError("--method ce trains without a mixed view (--aug none)")
