"""A run's open-set scorer for its --score, and the summary training writes after its last epoch.

- ``sum`` / ``normalized``: Algorithm 1 (bank_scorer.py) on the features the model's ``embedder()`` gives:
  the L2-normalised head outputs of a contrastive model, the L2-normalised pooled encoder features of a
  classifier (``--method ce``);
- ``msp`` / ``mls``: the classifier's own logits (logit_scorer.py; ``--method ce`` only).

``evaluate_open_set`` is the AUROC / closed-set accuracy / openness record of results.json.
"""

from __future__ import annotations

import torch
from torch import nn

from fastgradmix.common.errors import UserError
from fastgradmix.common.precision import FP32, Precision
from fastgradmix.data.augment import AugmentSpec
from fastgradmix.data.loaders.pipeline import EvalViews
from fastgradmix.data.openset import OpenSetData, openness
from fastgradmix.evaluation.bank_scorer import BankScorer
from fastgradmix.evaluation.logit_scorer import OPEN_SCORES, LogitScorer
from fastgradmix.evaluation.metrics import auroc, closed_set_accuracy
from fastgradmix.models import ClassifierModel

Scorer = BankScorer | LogitScorer


def build_scorer(model: nn.Module, data: OpenSetData, spec: AugmentSpec, topk: int, batch_size: int,
                 device: torch.device, precision: Precision = FP32, progress: bool = True, score: str = "sum",
                 views: EvalViews | None = None) -> Scorer:
    """The scorer of ``score`` (already resolved: not ``auto``) for ``model``; a logit score of a model without
    a classifier is a UserError."""
    if score in OPEN_SCORES:
        if not isinstance(model, ClassifierModel):
            raise UserError(f"--score {score} needs a classifier's logits: the run was not trained with "
                            "--method ce; use --score sum")
        return LogitScorer(model, spec, batch_size, device, precision, progress, score, views)
    return BankScorer(model.embedder(), data, spec, topk, batch_size, device, precision, progress, score, views)


def evaluate_open_set(model: nn.Module, data: OpenSetData, spec: AugmentSpec, topk: int, batch_size: int,
                      device: torch.device, precision: Precision = FP32, progress: bool = True,
                      score: str = "sum", views: EvalViews | None = None, keep_scores: dict | None = None) -> dict:
    """AUROC (None for closed-set protocols), closed-set accuracy and openness of the protocol's test set.

    ``keep_scores``: a dict that receives the open-set scores, "known" and "unknown" (1-D tensors), for a
    caller that draws them (the ROC curve of ``--tensorboard``)."""
    scored = build_scorer(model, data, spec, topk, batch_size, device, precision, progress, score,
                          views).score(data.test_images)
    is_known = data.test_labels >= 0
    if keep_scores is not None:
        keep_scores.update(known=scored.open_scores[is_known], unknown=scored.open_scores[~is_known])
    return {
        # closed-set protocols have no unknown test images: no AUROC (null in results.json)
        "auroc": auroc(scored.open_scores[is_known], scored.open_scores[~is_known]) if (~is_known).any() else None,
        "closed_acc": closed_set_accuracy(scored.predictions[is_known], data.test_labels[is_known]),
        "openness": openness(data.num_known, data.num_known + len(data.unknown_classes)),
    }
