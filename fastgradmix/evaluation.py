"""Open-set evaluation after training: Algorithm 1 scores, AUROC and closed-set accuracy."""

from __future__ import annotations

import torch
from torch import nn

from .data.augment import AugmentSpec
from .data.openset import OpenSetData
from .features import extract_features
from .metrics import auroc, closed_set_accuracy, openness
from .osr import class_topk_scores, osr_predict


def evaluate_open_set(model: nn.Module, data: OpenSetData, spec: AugmentSpec, topk: int, batch_size: int,
                      device: torch.device, channels_last: bool = False, progress: bool = True) -> dict:
    bank = extract_features(model, data.train_images, spec, batch_size, device, channels_last,
                            desc="bank features", progress=progress)  # (N_train, D)
    test = extract_features(model, data.test_images, spec, batch_size, device, channels_last,
                            desc="test features", progress=progress)  # (N_test, D)
    scores = class_topk_scores(test, bank, data.train_labels.to(device), data.num_known, k=topk)  # (N_test, K)
    predictions, open_score = osr_predict(scores)
    labels = data.test_labels.to(device)
    is_known = labels >= 0
    open_score_np = open_score.cpu().numpy()
    is_known_np = is_known.cpu().numpy()
    return {
        "auroc": auroc(open_score_np[is_known_np], open_score_np[~is_known_np]),
        "closed_acc": closed_set_accuracy(predictions[is_known].cpu().numpy(), labels[is_known].cpu().numpy()),
        "openness": openness(data.num_known, data.num_known + len(data.unknown_classes)),
    }
