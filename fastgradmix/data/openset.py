"""The in-memory form every protocol is turned into: uint8 images plus known/unknown labels."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class OpenSetData:
    """One open-set problem.

    Labels of known classes are 0..K-1 in the order of ``known_classes``; unknown test images carry
    label -1. Images are uint8 (N, C, H, W) at their stored resolution; models see them resized to
    the run's image size.
    """

    protocol: str
    split: int
    train_images: torch.Tensor  # (N_train, C, H, W) uint8
    train_labels: torch.Tensor  # (N_train,) int64 in [0, K)
    test_images: torch.Tensor  # (N_test, C, H, W) uint8, knowns then unknowns
    test_labels: torch.Tensor  # (N_test,) int64, -1 for unknown classes
    known_classes: list[str]
    unknown_classes: list[str]
    mean: tuple[float, ...]  # per-channel normalisation, in [0, 1] units
    std: tuple[float, ...]
    digit_like: bool  # no flips, no colour ops (digits, MNIST)

    @property
    def channels(self) -> int:
        return self.train_images.shape[1]

    @property
    def num_known(self) -> int:
        return len(self.known_classes)

    @property
    def n_known_test(self) -> int:
        return int((self.test_labels >= 0).sum())

    @property
    def n_unknown_test(self) -> int:
        return int((self.test_labels < 0).sum())
