"""Algorithm 1 against a run's feature bank: ``BankScorer`` embeds the run's known training images once and
scores any uint8 image set against them (best known class, open-set score). scoring.py picks it or the
classifier's scores (logit_scorer.py) for a run's --score.

Everything runs in eval mode on un-augmented images, batched, on the model's device, the model in the given
precision (the run's: common/precision.py), features and scores in fp32. Under
torch.distributed (a torchrun training run) each rank embeds a share of the images and every rank gathers
all features, so every rank computes the same scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fastgradmix.common.errors import UserError
from fastgradmix.common.precision import FP32, Precision
from fastgradmix.data.augment import AugmentSpec
from fastgradmix.data.loaders.pipeline import EvalViews
from fastgradmix.data.openset import OpenSetData
from fastgradmix.evaluation.features import extract_features_sharded
from fastgradmix.evaluation.topk_similarity import class_topk_scores, osr_predict, score_normalized

SCORES = ("sum", "normalized")


@dataclass
class Scored:
    """Algorithm 1 on a set of images, on the CPU."""

    predictions: torch.Tensor  # (T,) int64, best known class
    open_scores: torch.Tensor  # (T,) float32, higher = known


class BankScorer:
    """The feature bank of a run's known training images; scores any uint8 image batch against it.

    ``model`` gives the L2-normalised features Algorithm 1 scores (a model's ``embedder()``).
    ``score="sum"`` is Algorithm 1 (the open-set score is the best class's top-k similarity sum);
    ``"normalized"`` divides each class score by their sum first, as the published GradMix code does.
    """

    def __init__(self, model: nn.Module, data: OpenSetData, spec: AugmentSpec, topk: int, batch_size: int,
                 device: torch.device, precision: Precision = FP32, progress: bool = True, score: str = "sum",
                 views: EvalViews | None = None):
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        self.model, self.spec, self.topk, self.batch_size = model, spec, topk, batch_size
        self.device, self.precision, self.progress, self.score_mode = device, precision, progress, score
        self.views = views  # the input pipeline's evaluation views (None: made on the device)
        self.num_classes = data.num_known
        self.bank = self.features(data.train_images, "bank features")  # (N_train, D)
        self.bank_labels = data.train_labels.to(device)  # (N_train,)

    def features(self, images: torch.Tensor, desc: str, progress: bool | None = None) -> torch.Tensor:
        """uint8 images (T, C, H, W) -> L2-normalised features (T, D) on the device."""
        return extract_features_sharded(self.model, images, self.spec, self.batch_size, self.device,
                                        self.precision, desc=desc,
                                        progress=self.progress if progress is None else progress, views=self.views)

    def score(self, images: torch.Tensor, desc: str = "test features", progress: bool | None = None) -> Scored:
        """uint8 images (T, C, H, W) -> predictions and open-set scores."""
        with torch.no_grad():
            features = self.features(images, desc, progress)  # (T, D)
            class_scores = class_topk_scores(features, self.bank, self.bank_labels, self.num_classes,
                                             k=self.topk)  # (T, K)
            if self.score_mode == "normalized":
                class_scores = score_normalized(class_scores)
            predictions, open_scores = osr_predict(class_scores)
        open_scores = open_scores.cpu()
        if not torch.isfinite(open_scores).all():
            raise UserError(f"--score {self.score_mode} gave non-finite open-set scores (class scores summing to "
                            "zero or below); use --score sum")
        return Scored(predictions.cpu(), open_scores)
