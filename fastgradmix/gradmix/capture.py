"""Forward hooks that keep the CAM layers' outputs of one forward (DESIGN.md section 2, step 2).

GradMix needs the activations A of the chosen CAM layers for the clean views, and their gradient
G = dL_con/dA. ``CamCapture`` keeps A while armed; the training step arms it around the clean forward
only, so the mixed view's forward does not overwrite it. The open-set diversity evaluation uses the same
hooks for its CAM maps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["CamCapture"]


class CamCapture:
    """Forward hooks keeping the outputs of the named CAM layers while armed.

    Arm it for the clean forward only; the mixed view's forward must not overwrite the captures.
    With ``keep_grads`` the captured activations also record their gradient during the next
    backward (the ``--cam-grad detached`` mode).
    """

    def __init__(self, model: nn.Module, layer_names: list[str], keep_grads: bool = False,
                 find_layer: Callable[[str], nn.Module] | None = None):
        """``find_layer(name)`` is the module a name stands for: by default this project's ``cam_module``
        (conv5_2); the drop-in ``GradMix`` (mixer.py) passes one for module names of any model."""
        self.layer_names = layer_names
        self.keep_grads = keep_grads
        self.armed = False
        self.activations: list[torch.Tensor] = []  # per layer (B, C_l, h_l, w_l), B the forward's batch
        self.gradients: list[torch.Tensor | None] = []  # same shapes, filled by the backward (keep_grads)
        self._handles = []
        find_layer = find_layer or model.cam_module
        for index, name in enumerate(layer_names):
            module = find_layer(name)
            self._handles.append(module.register_forward_hook(self._make_hook(index)))

    def _make_hook(self, index: int):
        def hook(module, inputs, output):
            if not self.armed:
                return
            self.activations[index] = output
            if self.keep_grads and output.requires_grad:
                def keep(grad, index=index):
                    self.gradients[index] = grad
                output.register_hook(keep)
        return hook

    def arm(self) -> None:
        self.activations = [None] * len(self.layer_names)
        self.gradients = [None] * len(self.layer_names)
        self.armed = True

    def disarm(self) -> None:
        self.armed = False

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
