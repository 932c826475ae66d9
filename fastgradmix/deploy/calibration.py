"""The open-set threshold: the score at which a chosen fraction (TPR) of held-out known images is accepted.

Scheme: leave-one-out over the bank. Every known training image is scored (Algorithm 1, top-k class
similarity) against the bank *without itself*, which is exactly how an unseen image of its class is
scored against the full bank, minus one bank entry. Scoring a bank member against a bank containing
itself would add its own similarity (1.0) to its class score and put the threshold far too high.
Leave-one-out uses every training image for calibration and keeps every one in the deployed bank, so
the deployed scores are the evaluation's scores.

What it cannot remove: the encoder was trained on these images, so their features sit a little
tighter around their class than those of new images; on new known images the acceptance rate can come
out somewhat below the TPR. `fastgradmix.export` reports the rate on the known test images next to it.
"""

from __future__ import annotations

import math

import torch

from fastgradmix.evaluation.topk_similarity import class_topk_scores


@torch.no_grad()
def leave_one_out_scores(bank_features: torch.Tensor, bank_labels: torch.Tensor, num_classes: int, k: int,
                         chunk_size: int = 2048) -> torch.Tensor:
    """Open-set score (max_c s_c) of each bank entry against the bank without itself, (N,) float32.

    Other classes' scores do not involve the entry, so they are the plain top-k scores. For its own
    class the entry's self-similarity is the largest in that class's list, so the top (k+1) there are
    itself plus the top k of the others: subtracting the self-similarity leaves the leave-one-out sum.
    A class whose only bank entry is the one left out has nothing left and scores -inf.
    """
    labels = bank_labels.to(device=bank_features.device, dtype=torch.long)  # (N,)
    scores = class_topk_scores(bank_features, bank_features, labels, num_classes, k, chunk_size)  # (N, C)
    with_self = class_topk_scores(bank_features, bank_features, labels, num_classes, k + 1, chunk_size)  # (N, C)
    features = bank_features.float()
    self_similarity = (features * features).sum(dim=1)  # (N,), 1 up to rounding
    own_class = with_self.gather(1, labels[:, None]).squeeze(1) - self_similarity  # (N,)
    alone = torch.bincount(labels, minlength=num_classes)[labels] == 1  # (N,)
    own_class = own_class.masked_fill(alone, float("-inf"))
    scores = scores.scatter(1, labels[:, None], own_class[:, None])
    return scores.max(dim=1).values


def threshold_for_tpr(held_out_scores: torch.Tensor, tpr: float) -> float:
    """The largest score t with at least ``tpr`` of the scores >= t (known = score >= t).

    With n scores sorted ascending that is the one at index floor((1 - tpr) n); tpr = 1 accepts all.
    """
    if not 0 < tpr <= 1:
        raise ValueError(f"tpr must lie in (0, 1], got {tpr}")
    ordered = held_out_scores.double().flatten().sort().values
    if ordered.numel() == 0:
        raise ValueError("no held-out score to calibrate on")
    # the epsilon keeps e.g. (1 - 0.95) * 100 = 5.000000000000004 at index 5, not 4 after float error
    index = min(math.floor((1 - tpr) * ordered.numel() + 1e-9), ordered.numel() - 1)
    threshold = float(ordered[index])
    if not math.isfinite(threshold):
        raise ValueError("the held-out scores are not finite: every class needs at least two bank images")
    return threshold


def accepted_fraction(scores: torch.Tensor, threshold: float) -> float:
    """Fraction of ``scores`` at or above ``threshold`` (0 for no scores)."""
    if scores.numel() == 0:
        return 0.0
    return float((scores >= threshold).float().mean())
