"""The in-memory forms: a labelled image set as a reader returns it, and one open-set problem.

Readers (data/readers/: mnist.py, svhn.py, cifar.py, tinyimagenet.py, folders.py) return :class:`LabelledImages` with
the dataset's canonical class indices; a protocol turns one or more of them into :class:`OpenSetData`,
whose known labels are 0..K-1 in the order of its known class list and whose unknown test images carry -1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch


def openness(n_train_classes: int, n_test_classes: int) -> float:
    """Openness O = 1 - sqrt(I / S), I training (known) classes, S testing classes (known + unknown).

    0 for a closed set (S = I), approaching 1 as unknown classes dominate the test set.
    """
    if n_train_classes <= 0 or n_test_classes <= 0:
        raise ValueError(
            f"class counts must be positive, got {n_train_classes} training and {n_test_classes} testing"
        )
    if n_train_classes > n_test_classes:
        raise ValueError(
            f"{n_train_classes} training classes exceed {n_test_classes} testing classes; "
            "the testing classes include the known ones"
        )
    return 1.0 - math.sqrt(n_train_classes / n_test_classes)


@dataclass
class LabelledImages:
    """A dataset split as read from disk: uint8 images at native resolution and canonical labels."""

    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64, canonical class index of the dataset
    class_names: list[str]  # name of each canonical class index
    files: list[str] | None = None  # source image file of each row (file-backed layouts only)
    skipped: list[str] = field(default_factory=list)  # unreadable files left out (--skip-bad-images)

    def __len__(self) -> int:
        return self.labels.shape[0]

    def select(self, classes: list[int]) -> LabelledImages:
        """The rows whose canonical label is in ``classes``, in their stored order, labels unchanged."""
        keep = torch.isin(self.labels, torch.tensor(classes, dtype=torch.int64))
        rows = keep.nonzero().flatten()
        files = None if self.files is None else [self.files[i] for i in rows.tolist()]
        return replace(self, images=self.images[rows], labels=self.labels[rows], files=files)


@dataclass
class OpenSetData:
    """One open-set problem.

    Labels of known classes are 0..K-1 in the order of ``known_classes``; unknown test images carry
    label -1. Images are uint8 (N, C, H, W) at their stored resolution; models see them resized to
    the run's image size. Closed-set protocols have no unknown test images (``unknown_classes`` empty).
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
    flip: bool = True  # horizontal flips make sense (not for digits)
    color: bool = True  # colour jitter / grayscale make sense (not for MNIST-like data)
    # source files row by row, for file readers (DALI); None when the rows come from array formats
    train_files: list[str] | None = None
    test_files: list[str] | None = None
    skipped_images: int = 0  # unreadable images left out under --skip-bad-images
    # (N_test,) int64: for an unknown test image its class's index in ``unknown_classes``, -1 for known
    # ones; None where a protocol does not say (digits). Used by per-class caps of unknown test images.
    unknown_test_classes: torch.Tensor | None = None

    @property
    def digit_like(self) -> bool:
        """No flips and no colour ops (digits, MNIST)."""
        return not self.flip and not self.color

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

    @property
    def openness(self) -> float:
        return openness(self.num_known, self.num_known + len(self.unknown_classes))

    def describe(self) -> str:
        """One line for the start of a run: classes, openness and image counts."""
        height, width = self.train_images.shape[-2:]
        skipped = f", {self.skipped_images} unreadable images skipped" if self.skipped_images else ""
        return (f"{self.protocol} split {self.split}: {self.num_known} known / {len(self.unknown_classes)} "
                f"unknown classes, openness {self.openness:.4f}; {self.train_images.shape[0]} train, "
                f"{self.n_known_test} known test, {self.n_unknown_test} unknown test images "
                f"({self.channels}x{height}x{width}){skipped}")

    def subset_train(self, n: int, seed: int) -> OpenSetData:
        """A class-balanced random subset of n training images (all of them when n >= N_train).

        Classes take turns: every class gives its first randomly drawn image, then its second, and so
        on, so small subsets still hold every known class while they can.
        """
        total = self.train_labels.shape[0]
        if n <= 0 or n >= total:
            return self
        order = np.random.default_rng(seed).permutation(total)
        labels = self.train_labels.numpy()[order]
        # rank of each drawn image within its class, in draw order
        by_class = np.argsort(labels, kind="stable")
        class_start = np.searchsorted(labels[by_class], labels[by_class])
        rank = np.empty(total, dtype=np.int64)
        rank[by_class] = np.arange(total) - class_start
        chosen = np.sort(order[np.lexsort((np.arange(total), rank))[:n]])  # stored order kept
        rows = torch.from_numpy(chosen)
        files = None if self.train_files is None else [self.train_files[i] for i in chosen.tolist()]
        return replace(self, train_images=self.train_images[rows], train_labels=self.train_labels[rows],
                       train_files=files)
