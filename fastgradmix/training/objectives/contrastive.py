"""``--method supcon+simclr``, ``supcon`` and ``simclr``: the contrastive objectives over the two clean views.

The clean forward encodes [v1; v2] (2N images) into z1, z2 (N, D) each; L_con is (DESIGN.md section 2)

- ``supcon+simclr``: theta L_supcon + lambda L_simclr (the paper's objective);
- ``supcon``: theta L_supcon, so with a mixed view its mix term is the only self-supervised part;
- ``simclr``: lambda L_simclr.

l_mix(i) of every one of them is ``losses.mix_loss_per_sample``: anchor z_mix_i, positive z2_i, negatives
the other images' clean features (detached when ``--cam-grad detached`` has already back-propagated L_con).
The maths are in losses.py; these classes only hold the settings and the step's clean features.
"""

from __future__ import annotations

import torch
from torch import nn

from fastgradmix.training.objectives.base import Objective
from fastgradmix.training.objectives.losses import (
    gradmix_objective,
    mix_loss_per_sample,
    simclr_loss,
    supcon_loss,
)

__all__ = ["ContrastiveObjective", "SimCLR", "SupCon", "SupConSimCLR"]


class ContrastiveObjective(Objective):
    """Two views of every image in one forward; the subclasses say which terms make L_con."""

    def __init__(self, cfg, module: nn.Module | None = None):
        self.theta = cfg.theta
        self.lam = cfg.lam
        self.temperature = cfg.temperature
        self.negatives_only = cfg.denominator == "negatives"
        self._z1: torch.Tensor | None = None  # this step's clean features (N, D), kept for l_mix
        self._z2: torch.Tensor | None = None

    def clean_views(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        return torch.cat([view1, view2])  # (2N, C, H, W)

    def clean_terms(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """features (2N, D): z1 = the first view's, z2 = the second's; labels (N,)."""
        n = features.shape[0] // 2
        self._z1, self._z2 = features[:n], features[n:]  # (N, D) each
        return self.terms(self._z1, self._z2, labels)

    def terms(self, z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def mix_per_sample(self, z_mix: torch.Tensor, detach_clean: bool) -> torch.Tensor:
        """l_mix(i) (N,) for z_mix (N, D): anchor z_mix_i, positive z2_i, negatives the other clean images."""
        z1, z2 = self._z1, self._z2
        if detach_clean:  # --cam-grad detached: L_con's gradient is already in .grad
            z1, z2 = z1.detach(), z2.detach()
        return mix_loss_per_sample(z_mix, z1, z2, self.temperature, self.negatives_only)

    def after_step(self) -> None:
        self._z1 = self._z2 = None


class SupConSimCLR(ContrastiveObjective):
    """theta L_supcon + lambda L_simclr."""

    def terms(self, z1, z2, labels):
        return gradmix_objective(z1, z2, labels, theta=self.theta, lam=self.lam, temperature=self.temperature,
                                 negatives_only=self.negatives_only)


class SupCon(ContrastiveObjective):
    """theta L_supcon."""

    def terms(self, z1, z2, labels):
        supcon = supcon_loss(z1, z2, labels, self.temperature, self.negatives_only)
        return {"loss": self.theta * supcon, "supcon": supcon, "mix": torch.zeros_like(supcon)}


class SimCLR(ContrastiveObjective):
    """lambda L_simclr (labels unused)."""

    def terms(self, z1, z2, labels):
        simclr = simclr_loss(z1, z2, self.temperature, self.negatives_only)
        return {"loss": self.lam * simclr, "simclr": simclr, "mix": torch.zeros_like(simclr)}
