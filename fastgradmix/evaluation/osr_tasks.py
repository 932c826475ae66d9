"""The score-based evaluation tasks: open-set recognition (known vs unknown test classes), closed-set
accuracy and OOD detection, each from the scores of a ``BankScorer`` (bank_scorer.py); and ``cap_rows``, the
seeded subset every task draws with --max-images.
"""

from __future__ import annotations

import torch

from fastgradmix.data.openset import OpenSetData, openness
from fastgradmix.evaluation.bank_scorer import Scored
from fastgradmix.evaluation.metrics import closed_set_accuracy, ood_metrics


def osr_task(scored: Scored, labels: torch.Tensor, data: OpenSetData) -> dict:
    """Known vs unknown test classes: AUROC and the OOD-style metrics, closed-set accuracy, openness."""
    is_known = labels >= 0
    known, unknown = scored.open_scores[is_known], scored.open_scores[~is_known]
    return {**ood_metrics(known, unknown),
            "closed_acc": closed_set_accuracy(scored.predictions[is_known], labels[is_known]),
            "openness": openness(data.num_known, data.num_known + len(data.unknown_classes)),
            "n_known": int(is_known.sum()), "n_unknown": int((~is_known).sum())}


def closed_task(scored: Scored, labels: torch.Tensor) -> dict:
    """Top-k classifier accuracy on the known test images."""
    is_known = labels >= 0
    return {"closed_acc": closed_set_accuracy(scored.predictions[is_known], labels[is_known]),
            "n": int(is_known.sum())}


def ood_task(known_scores: torch.Tensor, out_scores: torch.Tensor) -> dict:
    """In-distribution (known test) vs an out-of-distribution set: TNR@TPR95, AUROC, DTACC, AUIN, AUOUT."""
    return {**ood_metrics(known_scores, out_scores), "n_in": int(known_scores.numel()),
            "n_out": int(out_scores.numel())}


def cap_rows(images: torch.Tensor, labels: torch.Tensor, limit: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """At most ``limit`` rows (0 = all), drawn with ``seed`` and kept in their stored order."""
    if limit <= 0 or images.shape[0] <= limit:
        return images, labels
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(images.shape[0], generator=generator)[:limit].sort().values
    return images[rows], labels[rows]
