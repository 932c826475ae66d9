"""What the training step asks of an objective (``--method``): the clean loss L_con and the mix term's l_mix.

One step, in the order the step calls it (DESIGN.md section 2):

- ``before_step(view2, generator, autocast)``: work before the clean forward (MoCo: move the key encoder,
  encode the keys, drawing the key-split shuffle from ``generator``);
- ``clean_views(view1, view2)``: the images of the clean forward;
- ``clean_terms(features, labels)``: L_con under "loss", its parts, and a zero "mix"; the objective keeps
  what l_mix needs from the clean pass (the clean features, MoCo's keys);
- ``cam_loss(terms, kind)``: the loss the CAM gradient comes from (``--cam-loss``);
- ``mixed_views(mixed, view2)``: the images of the mixed forward (m, or [m; v2] for ``--mix-anchors clean``);
- ``mix_per_sample(z_mix, detach_clean)``: l_mix(i) (N,) of the mixed view's features;
- ``after_step()``: after the optimizer step (MoCo: enqueue the keys); drops the step's tensors.

``state_key`` names the checkpoint entry of ``state_dict()`` (None: the objective has no state), and
``extra_compile_modules`` the modules besides the model that ``--compile`` compiles (MoCo's key encoder).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from torch import nn

__all__ = ["Objective"]


class Objective:
    """Defaults: no work around the step, no state, nothing extra to compile."""

    state_key: str | None = None

    @property
    def extra_compile_modules(self) -> list[nn.Module]:
        return []

    def before_step(self, view2: torch.Tensor, generator: torch.Generator,
                    autocast: Callable[[], AbstractContextManager]) -> None:
        """view2 (N, C, H, W); ``autocast()`` is the step's autocast context."""

    def clean_views(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def clean_terms(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def mix_per_sample(self, z_mix: torch.Tensor, detach_clean: bool) -> torch.Tensor:
        raise NotImplementedError

    def cam_loss(self, terms: dict[str, torch.Tensor], kind: str) -> torch.Tensor:
        """The loss whose gradient at the CAM layers places GradMix's box (``--cam-loss``): L_con
        (``objective``), or the self-supervised term (``self-supervised``; here L_con is just that)."""
        return terms["loss"]

    def mixed_views(self, mixed: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        """The images of the mixed forward: the mixed view m (N, C, H, W)."""
        return mixed

    def after_step(self) -> None:
        """Called once the optimizer has stepped."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore."""
