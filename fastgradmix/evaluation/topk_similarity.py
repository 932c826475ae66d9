"""Open-set scoring by top-k class similarity (Algorithm 1 of the GradMix paper).

A test feature's score for class c is the sum of its k highest cosine similarities to the bank
(L2-normalised training features) of class c; the prediction is the best class and the open-set
score its score (higher = known). The test x bank matmul is chunked over test rows so memory stays
bounded for large banks.
"""

from __future__ import annotations

import torch

__all__ = ["class_topk_scores", "osr_predict", "score_normalized"]


def _class_index_table(bank_labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded table of bank indices per class, (C, max_n_c) with -1 padding, and counts (C,)."""
    class_counts = torch.bincount(bank_labels, minlength=num_classes)  # (C,)
    max_class_count = int(class_counts.max())
    # a stable sort groups each class's bank entries; an entry's slot is its offset in its group
    sorted_labels, bank_order = torch.sort(bank_labels, stable=True)  # (B,), (B,)
    class_start = torch.cumsum(class_counts, dim=0) - class_counts  # (C,)
    slot = torch.arange(bank_labels.numel(), device=bank_labels.device) - class_start[sorted_labels]  # (B,)
    table = torch.full((num_classes, max_class_count), -1, dtype=torch.long, device=bank_labels.device)
    table[sorted_labels, slot] = bank_order
    return table, class_counts


def class_topk_scores(
    test_features: torch.Tensor,
    bank_features: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    k: int = 10,
    chunk_size: int = 2048,
) -> torch.Tensor:
    """Per-class top-k similarity sums, (T, C) fp32, on the bank's device.

    test_features (T, D) and bank_features (B, D) are L2-normalised, so the dot product is the
    cosine similarity; bank_labels (B,) in [0, num_classes). s_c sums the top min(k, n_c)
    similarities to class c's n_c bank entries; a class without entries scores -inf. Test rows
    are processed ``chunk_size`` at a time, each chunk holding about chunk_size * B similarities
    (plus the per-class padding of unbalanced classes). Call under ``torch.no_grad()`` for scoring.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    if bank_features.shape[0] == 0:
        raise ValueError("the feature bank is empty: no class can be scored")
    if bank_labels.shape != bank_features.shape[:1]:
        raise ValueError(f"bank_labels {tuple(bank_labels.shape)} must be ({bank_features.shape[0]},)")
    if test_features.shape[1:] != bank_features.shape[1:]:
        raise ValueError(
            f"test features {tuple(test_features.shape)} and bank {tuple(bank_features.shape)} differ in dim"
        )
    device = bank_features.device
    bank_labels = bank_labels.to(device=device, dtype=torch.long)
    lowest_label, highest_label = int(bank_labels.min()), int(bank_labels.max())
    if lowest_label < 0 or highest_label >= num_classes:
        raise ValueError(f"bank_labels must lie in [0, {num_classes}), got [{lowest_label}, {highest_label}]")

    table, class_counts = _class_index_table(bank_labels, num_classes)  # (C, N_max), (C,)
    is_padding = table < 0  # (C, N_max)
    gather_index = table.clamp_min(0)  # (C, N_max)
    top_count = min(k, table.shape[1])
    class_is_empty = class_counts == 0  # (C,)

    scores = []
    with torch.autocast(device_type=device.type, enabled=False):
        bank = bank_features.float()  # (B, D)
        for start in range(0, test_features.shape[0], chunk_size):
            chunk = test_features[start : start + chunk_size].to(device=device, dtype=torch.float32)  # (t, D)
            similarity = chunk @ bank.T  # (t, B)
            per_class = similarity[:, gather_index]  # (t, C, N_max)
            per_class = per_class.masked_fill(is_padding, float("-inf"))
            top = per_class.topk(top_count, dim=2).values  # (t, C, top_count)
            # classes with fewer than k entries expose padding (-inf) in their top-k: count it as 0
            # via where(), since -inf * 0 or -inf + inf would give NaN
            top = torch.where(torch.isneginf(top), torch.zeros_like(top), top)
            class_score = top.sum(dim=2)  # (t, C)
            scores.append(class_score.masked_fill(class_is_empty, float("-inf")))
    if not scores:
        return torch.empty((0, num_classes), dtype=torch.float32, device=device)
    return torch.cat(scores)


def osr_predict(class_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Prediction argmax_c (T,) int64 and open-set score max_c (T,) fp32 (higher = known)."""
    best_score, best_class = class_scores.float().max(dim=1)
    return best_class.long(), best_score


def score_normalized(class_scores: torch.Tensor) -> torch.Tensor:
    """Class scores divided by their sum over classes, (T, C) fp32.

    This is the published GradMix code's variant (used there with top-k = 3), kept so users can
    compare with it; the paper's Algorithm 1 uses the raw scores. It assumes finite scores with a
    positive sum per row (true when similarities are mostly positive); a class without bank
    entries (-inf) makes the row NaN.
    """
    class_scores = class_scores.float()
    return class_scores / class_scores.sum(dim=1, keepdim=True)
