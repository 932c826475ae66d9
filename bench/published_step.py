"""The published GradMix code's way through one training step, written from DESIGN.md's description, as
the comparator of ``bench_step.py``. It is timed, not trained with: its semantics follow the published
code where DESIGN.md lists them, and its cost profile is what the comparison is about.

Per step (N images, views v1, v2):

1. CAM pass: an extra forward of both views (2N) with hooks on the CAM layer(s), a SimCLR loss, and a
   full ``loss.backward()``: parameter gradients included, which are then thrown away (``zero_grad``);
   the hooks keep each CAM layer's activation and its gradient.
2. The v1 halves of activations and gradients are copied to the host (a device sync on a GPU) and the
   LayerCAM map ReLU(sum_c ReLU(G_c) A_c) is computed in NumPy, upsampled to the image size sample by
   sample, summed over layers, and normalised batch-wide (min-max over the whole batch).
3. One box size for the whole batch (gamma ~ U(gamma_min, gamma_max)); a Python loop over the samples
   centres the box on the map's hottest pixel (clipped to the image) and pastes Gaussian noise there
   with one slice assignment per sample; the mix weight is 1 - box area (DESIGN.md section 2: noise
   instead of the resized partner, box centred on the hottest pixel, one box size per batch, weight
   1 - area, batch-wide normalisation).
4. Training: one forward of v1, v2 and the mixed view (3N), the same contrastive objective as
   fastgradmix (SupCon + SimCLR + weighted l_mix; its cost is negligible beside the network's), one
   backward, one optimizer step. Autocast, channels_last and the optimizer are those of the step it is
   compared with, so only the GradMix way differs.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
from torch import nn

from fastgradmix.training.objectives.losses import gradmix_objective, simclr_loss


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of one 2-D map (align_corners=False, half-pixel centres), as OpenCV's and PyTorch's."""
    def taps(out_len: int, in_len: int):
        source = np.clip((np.arange(out_len) + 0.5) * (in_len / out_len) - 0.5, 0, in_len - 1)
        low = np.floor(source).astype(int)
        high = np.minimum(low + 1, in_len - 1)
        return low, high, source - low

    row0, row1, row_w = taps(height, image.shape[0])
    col0, col1, col_w = taps(width, image.shape[1])
    rows = image[row0] * (1 - row_w)[:, None] + image[row1] * row_w[:, None]  # (height, w)
    return rows[:, col0] * (1 - col_w) + rows[:, col1] * col_w  # (height, width)


class PublishedStyleStep:
    """Same call signature as ``fastgradmix.training.step.TrainStep``; see the module docstring for what it does."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, cfg, device: torch.device,
                 amp_dtype: torch.dtype | None = None, seed: int = 0):
        self.model = model
        self.optimizer = optimizer
        self.cfg = cfg
        self.device = device
        self.amp_dtype = amp_dtype
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.rng = np.random.default_rng(seed)  # the published code draws its box size on the host
        self.capturing = False
        self.activations: dict[int, torch.Tensor] = {}
        self.gradients: dict[int, torch.Tensor] = {}
        for index, name in enumerate(cfg.cam_layer_list()):
            model.cam_module(name).register_forward_hook(self._make_hook(index))

    def _make_hook(self, index: int):
        def hook(module, inputs, output):
            if not self.capturing:
                return
            self.activations[index] = output.detach()

            def keep_gradient(grad):
                self.gradients[index] = grad.detach()

            output.register_hook(keep_gradient)
        return hook

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def __call__(self, view1: torch.Tensor, view2: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        cfg, n = self.cfg, view1.shape[0]
        height, width = view1.shape[-2:]

        # 1. the extra CAM pass: full forward and backward of a SimCLR loss, parameter gradients discarded
        self.capturing = True
        with self.autocast():
            features = self.model(torch.cat([view1, view2]).contiguous(memory_format=self.memory_format))
        simclr_loss(features[:n], features[n:], cfg.temperature).backward()
        self.capturing = False
        self.optimizer.zero_grad(set_to_none=True)

        # 2. maps on the host, in NumPy
        cam = np.zeros((n, height, width), dtype=np.float32)
        for index in sorted(self.activations):
            acts = self.activations[index][:n].float().cpu().numpy()  # (N, C, h, w)
            grads = self.gradients[index][:n].float().cpu().numpy()
            layer_cam = np.maximum((np.maximum(grads, 0) * acts).sum(axis=1), 0)  # (N, h, w)
            for i in range(n):
                cam[i] += resize_bilinear(layer_cam[i], height, width)
        cam = (cam - cam.min()) / (cam.max() - cam.min() + 1e-7)  # batch-wide min-max

        # 3. one box size per batch, centred on each sample's hottest pixel; noise pasted sample by sample
        gamma = self.rng.uniform(cfg.gamma_min, cfg.gamma_max)
        box_h, box_w = max(1, round(gamma * height)), max(1, round(gamma * width))
        noise = torch.randn(n, view1.shape[1], box_h, box_w, device=view1.device, dtype=view1.dtype)
        mixed = view1.clone()
        for i in range(n):
            hot_y, hot_x = np.unravel_index(int(cam[i].argmax()), (height, width))
            top = int(np.clip(hot_y - box_h // 2, 0, height - box_h))
            left = int(np.clip(hot_x - box_w // 2, 0, width - box_w))
            mixed[i, :, top:top + box_h, left:left + box_w] = noise[i]
        weights = torch.full((n,), 1.0 - box_h * box_w / (height * width), device=view1.device)

        # 4. the training forward of all three views, one backward, one update
        with self.autocast():
            features = self.model(torch.cat([view1, view2, mixed]).contiguous(memory_format=self.memory_format))
        z1, z2, z_mix = features[:n], features[n:2 * n], features[2 * n:]
        terms = gradmix_objective(z1, z2, labels, z_mix, weights, theta=cfg.theta, lam=cfg.lam,
                                  temperature=cfg.temperature)
        terms["loss"].backward()
        self.optimizer.step()  # the next step's CAM pass zeroes the gradients after its backward
        return {name: value.detach() for name, value in terms.items()}
