"""Evaluation-mode feature extraction: un-augmented, fixed order, batched, no gradients."""

from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm

from .data.augment import AugmentSpec
from .data.loaders import EvalViews


@torch.no_grad()
def extract_features(model: nn.Module, images: torch.Tensor, spec: AugmentSpec, batch_size: int,
                     device: torch.device, channels_last: bool = False, desc: str = "features",
                     progress: bool = True, views: EvalViews | None = None) -> torch.Tensor:
    """uint8 images (N, C, H, W) -> L2-normalised fp32 features (N, D) on ``device``.

    ``views``: the run's input pipeline's evaluation views (--loader); default: made on the device.
    """
    was_training = model.training
    model.eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    views = views or EvalViews(spec, device)
    chunks = []
    batches = views.batches(images, batch_size)  # each (B, C, size, size), in stored order
    total = -(-images.shape[0] // batch_size)
    for batch in tqdm(batches, total=total, desc=desc, leave=False, disable=not progress, unit="batch"):
        chunks.append(model(batch.contiguous(memory_format=memory_format)).float())
    model.train(was_training)
    return torch.cat(chunks)
