"""The published GradMix code's data-side choices, as options: its normalisation constants and its test subsets.

``--normalisation published`` (``published_normalisation``): gawainxu/GradMix ``datautil.mean_mapping`` and
``std_mapping`` instead of the statistics measured on each training set. The published CIFAR standard
deviations (0.2023, 0.1994, 0.2010) are the often-copied per-pixel ones, CIFAR-100 and the CIFAR+N tests
reuse CIFAR-10's, Tiny ImageNet uses ImageNet's, and MNIST is not normalised at all (its transform is
``ToTensor()`` and a rotation only): mean 0, std 1.

``--test-subsample published`` (``published_test_subset``): ``feature_reading.py`` reads the features
class by class with a batch size of 1 and stops once the image index exceeds ``breaks[dataset][part]``,
so it keeps the first ``break + 1`` images of every class, in the data set's order. Per protocol that is
at most 5001 bank (training) images per class, and per known / unknown test class: CIFAR-10 1101 / 501
(every known test image, half of each unknown class), CIFAR+10/+50 501 / 51, Tiny ImageNet 51 / 51 (all),
MNIST and SVHN 501 / 501.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from fastgradmix.common.errors import UserError
from fastgradmix.data.openset import OpenSetData

__all__ = ["PUBLISHED_CAPS", "PUBLISHED_NORMALISATION", "published_normalisation", "published_test_subset"]

_CIFAR10 = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
PUBLISHED_NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.0,), (1.0,)),
    "svhn": ((0.4376821, 0.4437697, 0.47280442), (0.19803012, 0.20101562, 0.19703614)),
    **{name: _CIFAR10 for name in ("cifar10", "cifar+10", "cifar+50", "cifar10-closed", "cifar100-closed",
                                   "cifar10-vs-cifar100", "cifar10-vs-svhn")},
    **{name: _IMAGENET for name in ("tinyimagenet", "tinyimagenet100-closed")},
}

# feature_reading.breaks[dataset] = {"train", "test_known", "test_unknown"}; each class keeps break + 1 images
_BREAKS = {
    "cifar+10": (5000, 500, 50),
    "cifar+50": (5000, 500, 50),
    "cifar10": (5000, 1100, 500),
    "tinyimagenet": (5000, 50, 50),
    "mnist": (5000, 500, 500),
    "svhn": (5000, 500, 500),
}
PUBLISHED_CAPS: dict[str, tuple[int, int, int]] = {name: tuple(b + 1 for b in breaks)
                                                   for name, breaks in _BREAKS.items()}


def published_normalisation(data: OpenSetData) -> OpenSetData:
    """``data`` with the published mean and std of its protocol (a one-line error where there are none)."""
    if data.protocol not in PUBLISHED_NORMALISATION:
        raise UserError(f"--normalisation published: the published code has no constants for {data.protocol}; "
                        "use --normalisation dataset")
    mean, std = PUBLISHED_NORMALISATION[data.protocol]
    if len(mean) != data.channels:
        raise UserError(f"--normalisation published: {data.protocol}'s published constants have {len(mean)} "
                        f"channel(s), the images {data.channels}")
    return replace(data, mean=mean, std=std)


def first_per_class(labels: torch.Tensor, cap: int) -> torch.Tensor:
    """(N,) bool: True for the first ``cap`` rows of every label value, in stored order."""
    order = torch.argsort(labels, stable=True)  # rows grouped by label, stored order within a label
    sorted_labels = labels[order]
    group_start = torch.searchsorted(sorted_labels, sorted_labels)  # first position of each row's label
    rank = torch.empty_like(labels)
    rank[order] = torch.arange(labels.shape[0]) - group_start  # (N,) index within the label
    return rank < cap


def published_test_subset(data: OpenSetData) -> OpenSetData:
    """The bank and test images ``feature_reading.py`` evaluates: the first N of every class (see above)."""
    if data.protocol not in PUBLISHED_CAPS:
        raise UserError(f"--test-subsample published: the published code has no test subsets for {data.protocol}; "
                        "use --test-subsample none")
    if data.unknown_test_classes is None:
        raise UserError(f"--test-subsample published: {data.protocol} does not record the unknown test classes")
    bank_cap, known_cap, unknown_cap = PUBLISHED_CAPS[data.protocol]
    keep_train = first_per_class(data.train_labels, bank_cap)
    known = data.test_labels >= 0
    # one label space for both parts: known classes 0..K-1, unknown classes K..K+U-1
    test_classes = torch.where(known, data.test_labels, data.num_known + data.unknown_test_classes)
    keep_test = torch.where(known, first_per_class(test_classes, known_cap), first_per_class(test_classes, unknown_cap))
    train_rows, test_rows = keep_train.nonzero().flatten(), keep_test.nonzero().flatten()
    return replace(
        data, train_images=data.train_images[train_rows], train_labels=data.train_labels[train_rows],
        test_images=data.test_images[test_rows], test_labels=data.test_labels[test_rows],
        unknown_test_classes=data.unknown_test_classes[test_rows],
        train_files=None if data.train_files is None else [data.train_files[i] for i in train_rows.tolist()],
        test_files=None if data.test_files is None else [data.test_files[i] for i in test_rows.tolist()],
    )
