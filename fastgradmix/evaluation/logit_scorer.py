"""Open-set scores of a classifier (``--method ce``): the maximum softmax probability (MSP, Hendrycks and
Gimpel 2017) or the maximum logit (MLS, Vaze et al. 2022) of its logits; the prediction is the arg max.

``LogitScorer`` has BankScorer's interface (``score(images) -> Scored``, ``device``), so every task that
scores images (osr, closed, ood, corruption) takes either. Softmax runs in fp32 on fp32 logits.
"""

from __future__ import annotations

import torch
from torch import nn

from fastgradmix.common.precision import FP32, Precision
from fastgradmix.data.augment import AugmentSpec
from fastgradmix.data.loaders.pipeline import EvalViews
from fastgradmix.evaluation.bank_scorer import Scored
from fastgradmix.evaluation.features import extract_features_sharded

__all__ = ["LogitScorer", "max_logit", "max_softmax_probability"]


def max_softmax_probability(logits: torch.Tensor) -> torch.Tensor:
    """MSP (T,) fp32 of logits (T, K): the largest class probability (higher = known)."""
    return torch.softmax(logits.float(), dim=1).amax(dim=1)


def max_logit(logits: torch.Tensor) -> torch.Tensor:
    """MLS (T,) fp32 of logits (T, K): the largest logit (higher = known)."""
    return logits.float().amax(dim=1)


OPEN_SCORES = {"msp": max_softmax_probability, "mls": max_logit}


class LogitScorer:
    """Scores uint8 images with a classifier model's logits (eval mode, un-augmented views, batched)."""

    def __init__(self, model: nn.Module, spec: AugmentSpec, batch_size: int, device: torch.device,
                 precision: Precision = FP32, progress: bool = True, score: str = "msp",
                 views: EvalViews | None = None):
        if score not in OPEN_SCORES:
            raise ValueError(f"score must be one of {tuple(OPEN_SCORES)}, got {score!r}")
        self.model, self.spec, self.batch_size, self.device = model, spec, batch_size, device
        self.precision, self.progress, self.score_mode, self.views = precision, progress, score, views

    def logits(self, images: torch.Tensor, desc: str = "test logits", progress: bool | None = None) -> torch.Tensor:
        """uint8 images (T, C, H, W) -> logits (T, K) fp32 on the device."""
        return extract_features_sharded(self.model, images, self.spec, self.batch_size, self.device,
                                        self.precision, desc=desc,
                                        progress=self.progress if progress is None else progress, views=self.views)

    def score(self, images: torch.Tensor, desc: str = "test logits", progress: bool | None = None) -> Scored:
        """uint8 images (T, C, H, W) -> predictions (arg max logit) and open-set scores (MSP or MLS)."""
        with torch.no_grad():
            logits = self.logits(images, desc, progress)  # (T, K)
            predictions = logits.argmax(dim=1)
            open_scores = OPEN_SCORES[self.score_mode](logits)
        return Scored(predictions.cpu(), open_scores.cpu())
