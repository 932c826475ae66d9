"""Turns what the readers return into one checked :class:`OpenSetData`.

Knowns are relabelled 0..K-1 in the order of the protocol's known list (the split list's order), test
images are ordered knowns first, then unknowns (label -1). Before any training starts it checks that the
class lists are sensible: no repeats, no class both known and unknown, and no class without images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastgradmix.common.errors import UserError
from fastgradmix.data.openset import LabelledImages, OpenSetData


@dataclass
class Style:
    """Per-protocol presentation: normalisation and which colour/geometry augmentations make sense."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool = True
    color: bool = True


def check_class_lists(protocol: str, known: list, unknown: list | None, same_source: bool) -> None:
    if not known:
        raise UserError(f"{protocol}: the known class list is empty")
    for kind, classes in (("known", known), ("unknown", unknown or [])):
        repeated = sorted({str(c) for c in classes if classes.count(c) > 1})
        if repeated:
            raise UserError(f"{protocol}: the {kind} class list repeats {', '.join(repeated)}")
    if same_source and unknown:
        overlap = [str(c) for c in known if c in unknown]
        if overlap:
            raise UserError(f"{protocol}: the known and unknown class lists overlap ({', '.join(overlap)}); a "
                            "class cannot be both")


def _require_every_class(protocol: str, part: str, data: LabelledImages, classes: list[int]) -> None:
    counts = torch.bincount(data.labels, minlength=len(data.class_names))
    empty = [data.class_names[c] for c in classes if counts[c] == 0]
    if empty:
        raise UserError(f"{protocol}: {part} has no images of class {', '.join(empty[:5])}"
                        f"{' ...' if len(empty) > 5 else ''}: the class is empty")


def make_open_set(protocol: str, split: int, train: LabelledImages, test: LabelledImages, known: list[int],
                  unknown: list[int] | None, style: Style, unknown_test: LabelledImages | None = None) -> OpenSetData:
    """Known classes ``known`` (canonical indices of train/test) against unknown test images.

    Unknown test images are the ``unknown`` classes of ``test`` (an OSR split), or, with ``unknown_test``
    (another dataset: cifar+N, OOD pairs), its ``unknown`` classes (None = all of it). ``unknown=[]`` and no
    ``unknown_test`` is a closed-set problem.
    """
    check_class_lists(protocol, known, unknown, same_source=unknown_test is None)
    train = train.select(known)
    known_test = test.select(known)
    _require_every_class(protocol, "the training set", train, known)
    _require_every_class(protocol, "the test set", known_test, known)
    out_source = test if unknown_test is None else unknown_test
    if unknown is None:
        unknown = list(range(len(out_source.class_names)))
        unknown_rows = out_source
    else:
        unknown_rows = out_source.select(unknown)
        _require_every_class(protocol, "the unknown test set", unknown_rows, unknown)
    if unknown_test is not None and len(unknown_rows) == 0:
        raise UserError(f"{protocol}: the unknown test set is empty")
    if len(unknown_rows) and unknown_rows.images.shape[1:] != known_test.images.shape[1:]:
        raise UserError(f"{protocol}: unknown test images are {tuple(unknown_rows.images.shape[1:])} but known ones "
                        f"{tuple(known_test.images.shape[1:])}; both sets need one shape")

    to_label = torch.full((len(train.class_names),), -1, dtype=torch.int64)
    to_label[torch.tensor(known)] = torch.arange(len(known))
    test_files = None
    if known_test.files is not None and unknown_rows.files is not None:
        test_files = known_test.files + (unknown_rows.files if unknown else [])
    n_unknown = len(unknown_rows) if unknown else 0
    to_unknown = torch.full((len(out_source.class_names),), -1, dtype=torch.int64)
    to_unknown[torch.tensor(unknown, dtype=torch.int64)] = torch.arange(len(unknown))
    return OpenSetData(
        protocol=protocol, split=split,
        train_images=train.images.contiguous(), train_labels=to_label[train.labels],
        test_images=torch.cat([known_test.images, unknown_rows.images[:n_unknown]]).contiguous(),
        test_labels=torch.cat([to_label[known_test.labels], torch.full((n_unknown,), -1, dtype=torch.int64)]),
        known_classes=[train.class_names[c] for c in known],
        unknown_classes=[out_source.class_names[c] for c in unknown],
        mean=style.mean, std=style.std, flip=style.flip, color=style.color,
        train_files=train.files, test_files=test_files,
        skipped_images=len({*train.skipped, *test.skipped, *(unknown_test.skipped if unknown_test else [])}),
        unknown_test_classes=torch.cat([torch.full((len(known_test),), -1, dtype=torch.int64),
                                        to_unknown[unknown_rows.labels[:n_unknown]]]),
    )
