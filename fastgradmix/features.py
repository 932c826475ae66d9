"""Evaluation-mode feature extraction: un-augmented, fixed order, batched, no gradients."""

from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm

from .data.augment import AugmentSpec, eval_view


@torch.no_grad()
def extract_features(model: nn.Module, images: torch.Tensor, spec: AugmentSpec, batch_size: int,
                     device: torch.device, channels_last: bool = False, desc: str = "features",
                     progress: bool = True) -> torch.Tensor:
    """uint8 images (N, C, H, W) -> L2-normalised fp32 features (N, D) on ``device``."""
    was_training = model.training
    model.eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    chunks = []
    starts = range(0, images.shape[0], batch_size)
    for start in tqdm(starts, desc=desc, leave=False, disable=not progress, unit="batch"):
        batch = images[start:start + batch_size].to(device, non_blocking=True)
        chunks.append(model(eval_view(batch, spec).contiguous(memory_format=memory_format)).float())
    model.train(was_training)
    return torch.cat(chunks)
