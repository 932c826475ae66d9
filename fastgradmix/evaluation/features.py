"""Evaluation-mode feature extraction: un-augmented, fixed order, batched, no gradients.

``extract_features_sharded`` splits the work over the ranks of torch.distributed and gives every rank all
the features, in the stored order; in a single process it is ``extract_features``.

The model runs in the given precision (common/precision.py: the run's, e.g. bf16 autocast + channels_last);
the features leave it as fp32, so whatever consumes them (similarities, top-k sums, metrics) is fp32.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm

from fastgradmix.common.precision import FP32, Precision
from fastgradmix.data.augment import AugmentSpec
from fastgradmix.data.loaders.pipeline import EvalViews
from fastgradmix.distributed import collectives as dist


@torch.no_grad()
def extract_features(model: nn.Module, images: torch.Tensor, spec: AugmentSpec, batch_size: int,
                     device: torch.device, precision: Precision = FP32, desc: str = "features",
                     progress: bool = True, views: EvalViews | None = None) -> torch.Tensor:
    """uint8 images (N, C, H, W) -> fp32 features (N, D) on ``device`` (L2-normalised for the whole model).

    ``views``: the run's input pipeline's evaluation views (--loader); default: made on the device.
    """
    was_training = model.training
    model.eval()
    views = views or EvalViews(spec, device)
    chunks = []
    batches = views.batches(images, batch_size)  # each (B, C, size, size), in stored order
    total = -(-images.shape[0] // batch_size)
    for batch in tqdm(batches, total=total, desc=desc, leave=False, disable=not progress, unit="batch"):
        with precision.autocast(device.type):
            features = model(batch.contiguous(memory_format=precision.memory_format))  # (B, D)
        chunks.append(features.float())
    model.train(was_training)
    return torch.cat(chunks)


def extract_features_sharded(model: nn.Module, images: torch.Tensor, spec: AugmentSpec, batch_size: int,
                             device: torch.device, precision: Precision = FP32, desc: str = "features",
                             progress: bool = True, views: EvalViews | None = None) -> torch.Tensor:
    """``extract_features`` with rank r embedding the r-th contiguous block of ceil(N / W) rows; one all-gather
    gives every rank the (N, D) features in stored order. Every rank must pass the same images and an
    unwrapped model (no DDP: the ranks run different numbers of batches)."""
    world = dist.world_size()
    if world == 1:
        return extract_features(model, images, spec, batch_size, device, precision, desc, progress, views)
    n = images.shape[0]
    per_rank = -(-n // world)
    start = min(dist.rank() * per_rank, n)
    mine = images[start:start + per_rank]
    if mine.shape[0] == 0:  # a rank past the end (N < W * per_rank) still joins the gather: it embeds one
        # image to learn the feature size and contributes padding only
        mine = images[:1]
    local = extract_features(model, mine, spec, batch_size, device, precision, desc, progress, views)
    local = local[:max(0, min(per_rank, n - start))]  # (n_r, D)
    padded = local.new_zeros(per_rank, local.shape[1])  # (ceil(N / W), D): all_gather needs equal shapes
    padded[:local.shape[0]] = local
    # blocks in rank order; only the trailing ranks are short and their padding sits at the very end
    return dist.gather(padded)[:n]
