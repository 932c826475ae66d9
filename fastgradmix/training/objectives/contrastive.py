"""``--method supcon+simclr``, ``supcon`` and ``simclr``: the contrastive objectives over the two clean views.

The clean forward encodes [v1; v2] (2N images) into z1, z2 (N, D) each; L_con is (DESIGN.md section 2)

- ``supcon+simclr``: theta L_supcon + lambda L_simclr (the paper's objective);
- ``supcon``: theta L_supcon, so with a mixed view its mix term is the only self-supervised part;
- ``simclr``: lambda L_simclr.

l_mix(i) of every one of them is ``losses.mix_loss_per_sample``: anchor z_mix_i, positive z2_i, negatives
the other images' clean features (detached when ``--cam-grad detached`` has already back-propagated L_con);
``--mix-anchors clean`` is the published code's form instead (``losses.clean_anchor_mix_loss_per_sample``).
The maths are in losses.py; these classes only hold the settings and the step's clean features.
"""

from __future__ import annotations

import torch
from torch import nn

from fastgradmix.training.objectives.base import Objective
from fastgradmix.training.objectives.losses import (
    clean_anchor_mix_loss_per_sample,
    gradmix_objective,
    mix_loss_per_sample,
    simclr_loss,
    supcon_loss,
)

__all__ = ["ContrastiveObjective", "SimCLR", "SupCon", "SupConSimCLR"]


class ContrastiveObjective(Objective):
    """Two views of every image in one forward; the subclasses say which terms make L_con.

    ``--denominator negatives`` is the paper's pair of equations: SupCon's denominator holds the negatives
    only (eq. 2), SimCLR's and l_mix's keep the positive (eq. 1). ``--loss-scale tau/0.07`` multiplies SupCon,
    SimCLR and l_mix by temperature / 0.07, as the published SupConLoss does.
    """

    def __init__(self, cfg, module: nn.Module | None = None):
        self.theta = cfg.theta
        self.lam = cfg.lam
        self.temperature = cfg.temperature
        self.negatives_only = cfg.denominator == "negatives"  # SupCon only (eq. 2)
        self.scale = cfg.temperature / 0.07 if cfg.loss_scale == "tau/0.07" else 1.0
        self.clean_anchors = cfg.mix_anchors == "clean"
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

    def supcon(self, z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.scale * supcon_loss(z1, z2, labels, self.temperature, self.negatives_only)

    def simclr(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return self.scale * simclr_loss(z1, z2, self.temperature)

    def cam_loss(self, terms: dict[str, torch.Tensor], kind: str) -> torch.Tensor:
        """``self-supervised``: SimCLR of both clean views (the published CAM's loss), else L_con."""
        if kind == "self-supervised":
            return terms["simclr"] if "simclr" in terms else self.simclr(self._z1, self._z2)
        return terms["loss"]

    def mixed_views(self, mixed: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        """The mixed forward's images: m, or [m; v2] for the published clean-anchor l_mix."""
        return torch.cat([mixed, view2]) if self.clean_anchors else mixed

    def mix_per_sample(self, z_mix: torch.Tensor, detach_clean: bool) -> torch.Tensor:
        """l_mix(i) (N,) for the mixed forward's features: anchor z_mix_i, positive z2_i, negatives the other
        clean images; or (``--mix-anchors clean``, z_mix = [f(m); f(v2)], 2N rows) the published form."""
        z1, z2 = self._z1, self._z2
        if detach_clean:  # --cam-grad detached: L_con's gradient is already in .grad
            z1, z2 = z1.detach(), z2.detach()
        if self.clean_anchors:
            n = z1.shape[0]
            return self.scale * clean_anchor_mix_loss_per_sample(z_mix[:n], z_mix[n:], z1, z2, self.temperature)
        return self.scale * mix_loss_per_sample(z_mix, z1, z2, self.temperature)

    def after_step(self) -> None:
        self._z1 = self._z2 = None


class SupConSimCLR(ContrastiveObjective):
    """theta L_supcon + lambda L_simclr."""

    def terms(self, z1, z2, labels):
        return gradmix_objective(z1, z2, labels, theta=self.theta, lam=self.lam, temperature=self.temperature,
                                 negatives_only=self.negatives_only, loss_scale=self.scale)


class SupCon(ContrastiveObjective):
    """theta L_supcon."""

    def terms(self, z1, z2, labels):
        supcon = self.supcon(z1, z2, labels)
        return {"loss": self.theta * supcon, "supcon": supcon, "mix": torch.zeros_like(supcon)}


class SimCLR(ContrastiveObjective):
    """lambda L_simclr (labels unused)."""

    def terms(self, z1, z2, labels):
        simclr = self.simclr(z1, z2)
        return {"loss": self.lam * simclr, "simclr": simclr, "mix": torch.zeros_like(simclr)}
