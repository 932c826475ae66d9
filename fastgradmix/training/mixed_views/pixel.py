"""``--aug mixup`` and ``--aug cutmix``: the ablation baselines that take GradMix's slot (DESIGN.md section 2).

Like GradMix, each makes one extra view from the first clean view: image i is mixed with a partner
p(i) of the same batch (a random derangement), and its l_mix term is weighted by w_i, the fraction of
the image that came from the partner (GradMix's w_i is the pasted box's area fraction):

- Mixup: m_i = lam_i v_i + (1 - lam_i) v_p(i), so w_i = 1 - lam_i.
- CutMix: a box of area about (1 - lam_i) H W shows the partner's pixels at the same place (the
  partner is not resized, unlike GradMix); w_i = the box's area after clipping / (H W).

lam_i ~ Beta(alpha, alpha) is drawn per sample, not once per batch as in the original Mixup and
CutMix code: GradMix draws its box size per sample, and a batch-wide draw would make the mix term's
weight jump between steps. CutMix boxes follow the CutMix code: sides int(H sqrt(1 - lam)) and
int(W sqrt(1 - lam)), centre uniform over the pixels, clipped at the border.

Everything is batched (no loop over samples) and reads nothing back to the host; random numbers come
from the caller's generator on the images' device, so a run is reproducible from its seed. ``PixelMix`` is
the strategy the training step sees (mixed_views/base.py): no CAM, nothing to capture, just ``make``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fastgradmix.common.sampling import random_derangement
from fastgradmix.training.mixed_views.base import MixedViewStrategy

__all__ = [
    "MIXING_AUGS",
    "MixedBatch",
    "PixelMix",
    "cutmix",
    "cutmix_boxes",
    "cutmix_view",
    "mixed_view",
    "mixup",
    "mixup_view",
    "sample_beta",
    "sample_cutmix_boxes",
]

MIXING_AUGS = ("mixup", "cutmix")


def sample_beta(n: int, alpha: float, generator: torch.Generator, device: torch.device,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """n draws of Beta(alpha, alpha), (n,) in [0, 1], from ``generator``; fp32 unless ``dtype`` says.

    Beta(a, a) = X / (X + Y) with X, Y ~ Gamma(a). torch.distributions takes no generator, so the
    Gamma draws call the op behind it, ``torch._standard_gamma``, which does. Small alpha (Mixup
    often uses 0.2 or less) makes X and Y underflow to 0 and X / (X + Y) to NaN, so the draws are
    made in log space with the boost Gamma(a) = Gamma(a + 1) U^(1/a) (Marsaglia and Tsang) and
    lam = sigmoid(log X - log Y). (In fp32, draws within 6e-8 of 1 round to exactly 1: a mix weight
    of 0 instead of < 1e-7.)
    """
    if not alpha > 0:
        raise ValueError(f"Beta(alpha, alpha) needs alpha > 0, got {alpha}")
    shape = torch.full((2, n), alpha + 1.0, dtype=torch.float64, device=device)  # X and Y rows
    gamma = torch._standard_gamma(shape, generator=generator)  # (2, n) ~ Gamma(alpha + 1)
    uniform = torch.rand((2, n), generator=generator, dtype=torch.float64, device=device)
    # float64 holds down to ~1e-308; the clamp keeps log() finite for a uniform draw of exactly 0
    log_gamma = gamma.clamp_min(1e-300).log() + uniform.clamp_min(1e-300).log() / alpha  # (2, n) log Gamma(a)
    return torch.sigmoid(log_gamma[0] - log_gamma[1]).to(dtype)


def mixup(images: torch.Tensor, partner_index: torch.Tensor, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample Mixup: ``(lam_i images_i + (1 - lam_i) images_{partner_index_i}, 1 - lam)``.

    images (N, C, H, W) float (any layout; the output keeps its dtype and memory format, the blend runs
    in fp32); partner_index (N,) int64; lam (N,) the own image's share. Returns the mixed images and
    the weights w (N,) fp32 = the partner's share.
    """
    n = images.shape[0]
    lam = lam.to(device=images.device, dtype=torch.float32)  # (N,)
    share = lam.view(n, 1, 1, 1)
    blend = images.float() * share + images[partner_index].float() * (1 - share)  # (N, C, H, W) fp32
    mixed = torch.empty_like(images)  # keeps the input's strides (NCHW or channels_last)
    mixed.copy_(blend)
    return mixed, 1 - lam


def cutmix_boxes(lam: torch.Tensor, center_y: torch.Tensor, center_x: torch.Tensor, height: int,
                 width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """CutMix boxes from lam (N,) and integer centres (N,): ``(top, left, box_h, box_w)`` int64 (N,).

    Unclipped sides int(H sqrt(1 - lam)) x int(W sqrt(1 - lam)) (truncation, as the CutMix code),
    top-left corner at centre - side // 2; then the box is clipped to the image, so a box near the
    border is smaller and box_h or box_w can be 0 (an empty box, weight 0).
    """
    cut_ratio = (1 - lam.double()).clamp(0, 1).sqrt()  # (N,) float64: exact sides for lam near 0 or 1
    cut_h = (height * cut_ratio).floor().long()  # (N,)
    cut_w = (width * cut_ratio).floor().long()
    top = (center_y - cut_h // 2).clamp(0, height)  # (N,)
    left = (center_x - cut_w // 2).clamp(0, width)
    bottom = (center_y - cut_h // 2 + cut_h).clamp(0, height)
    right = (center_x - cut_w // 2 + cut_w).clamp(0, width)
    return top, left, bottom - top, right - left


def sample_cutmix_boxes(lam: torch.Tensor, height: int, width: int,
                        generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """CutMix boxes for lam (N,) with centres drawn uniformly over the pixels (y first, then x)."""
    n, device = lam.shape[0], lam.device
    center_y = torch.randint(0, height, (n,), generator=generator, device=device)
    center_x = torch.randint(0, width, (n,), generator=generator, device=device)
    return cutmix_boxes(lam, center_y, center_x, height, width)


def cutmix(images: torch.Tensor, partner_index: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
           box_h: torch.Tensor, box_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample CutMix: box i of image i shows the partner's pixels at the same place (no resizing).

    images (N, C, H, W) float, any layout (the output keeps dtype and memory format);
    partner_index (N,) int64; box corners and sides (N,) int64, inside the image (``cutmix_boxes``
    clips them). Returns the mixed images and the weights w (N,) fp32 = box area / (H W).
    """
    n, _, height, width = images.shape
    rows = torch.arange(height, device=images.device).view(1, height)  # (1, H)
    cols = torch.arange(width, device=images.device).view(1, width)  # (1, W)
    in_rows = (rows >= top.view(n, 1)) & (rows < (top + box_h).view(n, 1))  # (N, H)
    in_cols = (cols >= left.view(n, 1)) & (cols < (left + box_w).view(n, 1))  # (N, W)
    in_box = in_rows.view(n, 1, height, 1) & in_cols.view(n, 1, 1, width)  # (N, 1, H, W)
    mixed = torch.empty_like(images)  # keeps the input's strides; where() writes every element
    torch.where(in_box, images[partner_index], images, out=mixed)
    weights = (box_h * box_w).float() / float(height * width)  # (N,)
    return mixed, weights


@dataclass
class MixedBatch:
    images: torch.Tensor  # (N, C, H, W) the mixed view, same dtype and layout as the input
    weights: torch.Tensor  # (N,) fp32, the partner's share w_i of each image
    partner: torch.Tensor  # (N,) int64 index of the partner image
    lam: torch.Tensor  # (N,) fp32, the Beta draw (the own image's intended share)


def mixup_view(images: torch.Tensor, alpha: float, generator: torch.Generator) -> MixedBatch:
    """Mixup view of a batch: lam ~ Beta(alpha, alpha) per sample, then a derangement partner."""
    n = images.shape[0]
    lam = sample_beta(n, alpha, generator, images.device)  # (N,)
    partner = random_derangement(n, generator, images.device)  # (N,)
    mixed, weights = mixup(images, partner, lam)
    return MixedBatch(mixed, weights, partner, lam)


def cutmix_view(images: torch.Tensor, alpha: float, generator: torch.Generator) -> MixedBatch:
    """CutMix view of a batch: lam ~ Beta(alpha, alpha), a box per sample, then a derangement partner."""
    n, _, height, width = images.shape
    lam = sample_beta(n, alpha, generator, images.device)  # (N,)
    top, left, box_h, box_w = sample_cutmix_boxes(lam, height, width, generator)
    partner = random_derangement(n, generator, images.device)  # (N,)
    mixed, weights = cutmix(images, partner, top, left, box_h, box_w)
    return MixedBatch(mixed, weights, partner, lam)


def mixed_view(aug: str, images: torch.Tensor, alpha: float, generator: torch.Generator) -> MixedBatch:
    """Dispatch on the --aug name: "mixup" or "cutmix" (see ``MIXING_AUGS``)."""
    if aug == "mixup":
        return mixup_view(images, alpha, generator)
    if aug == "cutmix":
        return cutmix_view(images, alpha, generator)
    raise ValueError(f"unknown mixing augmentation {aug!r}; choose one of {MIXING_AUGS}")


class PixelMix(MixedViewStrategy):
    """The step's Mixup or CutMix view: partner and mixing weights drawn per image, no CAM."""

    makes_view = True

    def __init__(self, aug: str, cfg, module: nn.Module, device: torch.device):
        super().__init__(aug, cfg, module, device)
        if aug not in MIXING_AUGS:
            raise ValueError(f"unknown mixing augmentation {aug!r}; choose one of {MIXING_AUGS}")
        self.alpha = cfg.mix_alpha

    def make(self, view1: torch.Tensor, generator: torch.Generator, indices: torch.Tensor | None = None) -> MixedBatch:
        return mixed_view(self.aug, view1, self.alpha, generator)
