"""Every protocol built from miniature copies of its standard layouts: counts, label mapping, class lists.

The expectations are computed here from the ground truth the fixture wrote and from osr_splits.json
read directly, never from the protocol code; each image carries its canonical class in its pixels.
"""

from __future__ import annotations

import json
import math
from importlib import resources

import numpy as np
import pytest
import torch
from conftest import shared_data_dir
from dataset_writers import CIFAR10_NAMES, CIFAR100_NAMES, class_of_pixels

from fastgradmix.data.protocols import PROTOCOLS, build_protocol

SPLITS = json.loads(resources.files("fastgradmix.data").joinpath("osr_splits.json").read_text())
# per-class counts written by write_all_layouts: (train, test)
PER_CLASS = {"mnist": (4, 3), "svhn": (4, 3), "cifar10": (5, 3), "cifar100": (2, 2), "tinyimagenet": (3, 2)}


def _build(root, name, split=0, **kwargs):
    return build_protocol(name, split, 32, root, progress=False, **kwargs)


def _stamped_class(data_images, source):
    """The canonical class each image carries: pixel (0, 0) of channel 0 (arrays), or the colour (files)."""
    if source == "tinyimagenet":
        return class_of_pixels(data_images)
    return data_images[:, 0, 0, 0].long().numpy()


def test_shipped_splits_equal_the_shared_file():
    shared = shared_data_dir()
    if shared is None:
        pytest.skip("../shared/data absent")
    assert SPLITS == json.loads((shared / "osr_splits.json").read_text())


def test_the_registry_holds_every_protocol_of_the_design():
    assert set(PROTOCOLS) == {"digits", "mnist", "svhn", "cifar10", "cifar+10", "cifar+50", "tinyimagenet",
                              "cifar10-closed", "cifar100-closed", "tinyimagenet100-closed",
                              "cifar10-vs-cifar100", "cifar10-vs-svhn", "imagefolder"}


@pytest.mark.parametrize("split", range(5))
@pytest.mark.parametrize("name,n_classes", [("mnist", 10), ("svhn", 10), ("cifar10", 10), ("tinyimagenet", 200)])
def test_osr_split_protocols(synthetic_data, name, n_classes, split):
    root, _ = synthetic_data
    data = _build(root, name, split)
    known = SPLITS[name]["known"][split]
    unknown = [c for c in range(n_classes) if c not in known]
    n_train, n_test = PER_CLASS[name]
    assert data.train_images.shape[0] == n_train * len(known)
    assert data.n_known_test == n_test * len(known) and data.n_unknown_test == n_test * len(unknown)
    # labels: position in the split's known list; unknowns -1, after the knowns
    train_class = _stamped_class(data.train_images, name)
    assert data.train_labels.tolist() == [known.index(c) for c in train_class]
    test_class = _stamped_class(data.test_images, name)
    expected = [known.index(c) if c in known else -1 for c in test_class]
    assert data.test_labels.tolist() == expected
    assert sorted(test_class[data.test_labels.numpy() < 0].tolist()) == sorted(unknown * n_test)
    assert (data.test_labels[:data.n_known_test] >= 0).all()
    assert data.openness == pytest.approx(1 - math.sqrt(len(known) / n_classes))
    assert data.train_images.dtype == torch.uint8 and data.train_labels.dtype == torch.int64
    if name == "tinyimagenet":
        wnids = sorted((root / "tiny-imagenet-200" / "wnids.txt").read_text().split())
        assert data.known_classes == [wnids[c] for c in known]
        assert len(data.train_files) == data.train_images.shape[0] and len(data.test_files) == len(data.test_labels)
    if name == "cifar10":
        assert data.known_classes == [CIFAR10_NAMES[c] for c in known]


def test_style_flags_per_protocol(synthetic_data):
    root, _ = synthetic_data
    built = {name: _build(root, name) for name in ("mnist", "svhn", "cifar10")}
    flags = {name: (data.flip, data.color) for name, data in built.items()}
    assert flags == {"mnist": (False, False), "svhn": (False, True), "cifar10": (True, True)}
    assert build_protocol("digits", 0, 16, root).digit_like


@pytest.mark.parametrize("split", range(5))
@pytest.mark.parametrize("name,n_unknown", [("cifar+10", 10), ("cifar+50", 50)])
def test_cifar_plus(synthetic_data, name, n_unknown, split):
    root, truth = synthetic_data
    data = _build(root, name, split)
    known, unknown = SPLITS[name]["known"][split], SPLITS[name]["unknown_cifar100"][split]
    assert len(known) == 4 and len(unknown) == n_unknown
    assert data.train_images.shape[0] == 5 * 4 and data.n_known_test == 3 * 4
    assert data.n_unknown_test == 2 * n_unknown  # CIFAR-100 test images of the unknown classes
    assert data.train_labels.tolist() == [known.index(c) for c in _stamped_class(data.train_images, "cifar10")]
    unknown_class = _stamped_class(data.test_images[data.n_known_test:], "cifar100")
    assert sorted(unknown_class.tolist()) == sorted(unknown * 2)
    assert data.unknown_classes == [CIFAR100_NAMES[c] for c in unknown]
    assert data.openness == pytest.approx(1 - math.sqrt(4 / (4 + n_unknown)))
    # the unknown images are the CIFAR-100 test images themselves
    images, labels = truth["cifar100"]["test"]
    expected = torch.from_numpy(images[np.isin(labels, unknown)])
    assert torch.equal(data.test_images[data.n_known_test:], expected)


@pytest.mark.parametrize("name,n_classes,source", [("cifar10-closed", 10, "cifar10"),
                                                    ("cifar100-closed", 100, "cifar100"),
                                                    ("tinyimagenet100-closed", 100, "tinyimagenet")])
def test_closed_set_protocols(synthetic_data, name, n_classes, source):
    root, _ = synthetic_data
    data = _build(root, name)
    n_train, n_test = PER_CLASS[source]
    assert data.train_images.shape[0] == n_train * n_classes and data.n_known_test == n_test * n_classes
    assert data.n_unknown_test == 0 and data.unknown_classes == [] and data.openness == 0.0
    assert data.train_labels.tolist() == _stamped_class(data.train_images, source).tolist()  # identity order
    assert data.test_labels.tolist() == _stamped_class(data.test_images, source).tolist()


@pytest.mark.parametrize("name,out_source,n_out", [("cifar10-vs-cifar100", "cifar100", 200),
                                                   ("cifar10-vs-svhn", "svhn", 30)])
def test_ood_pairs(synthetic_data, name, out_source, n_out):
    root, truth = synthetic_data
    data = _build(root, name)
    assert data.known_classes == CIFAR10_NAMES and data.train_images.shape[0] == 50
    assert data.n_known_test == 30 and data.n_unknown_test == n_out
    images, _ = truth[out_source]["test"]
    assert torch.equal(data.test_images[30:], torch.from_numpy(images))  # the whole out-set test split
    assert data.train_labels.tolist() == _stamped_class(data.train_images, "cifar10").tolist()


def test_imagefolder_protocol(tmp_path):
    from dataset_writers import write_class_folders

    names = ["ant", "bee", "cat", "dog", "eel"]
    write_class_folders(tmp_path / "train", names, 3, ext=".png", size=40)
    write_class_folders(tmp_path / "test", names, 2, ext=".png", size=40)
    data = build_protocol("imagefolder", 0, 16, tmp_path, known_classes="dog,ant", progress=False)
    assert data.known_classes == ["dog", "ant"] and data.unknown_classes == ["bee", "cat", "eel"]
    assert data.train_images.shape == (6, 3, 16, 16)
    # folder index i was written with class colour i: dog = 3 -> label 0, ant = 0 -> label 1
    colour = class_of_pixels(data.train_images)
    assert data.train_labels.tolist() == [{3: 0, 0: 1}[c] for c in colour]
    assert data.n_known_test == 4 and data.n_unknown_test == 6
    narrowed = build_protocol("imagefolder", 0, 16, tmp_path, known_classes="dog,ant", unknown_classes="eel",
                              progress=False)
    assert narrowed.n_unknown_test == 2 and narrowed.unknown_classes == ["eel"]
    # normalisation comes from the training images
    pixels = data.train_images.float() / 255
    assert data.mean == pytest.approx(tuple(pixels.mean(dim=(0, 2, 3)).tolist()), abs=1e-6)


def test_train_subset_is_class_balanced_and_deterministic(synthetic_data):
    root, _ = synthetic_data
    data = _build(root, "cifar10-closed")  # 10 classes x 5 training images
    small = data.subset_train(23, seed=3)
    counts = torch.bincount(small.train_labels, minlength=10)
    assert small.train_images.shape[0] == 23 and counts.max() - counts.min() <= 1
    again = data.subset_train(23, seed=3)
    assert torch.equal(small.train_images, again.train_images)
    assert not torch.equal(small.train_images, data.subset_train(23, seed=4).train_images)
    # the chosen rows are real rows of the full set with their own labels
    full = {bytes(img.numpy().tobytes()): int(label) for img, label in zip(data.train_images, data.train_labels,
                                                                            strict=True)}
    assert all(full[bytes(img.numpy().tobytes())] == int(label)
               for img, label in zip(small.train_images, small.train_labels, strict=True))
    assert data.subset_train(0, seed=0) is data and data.subset_train(10**6, seed=0) is data
    assert small.n_known_test == data.n_known_test  # the test set is untouched


def test_describe_names_protocol_openness_and_counts(synthetic_data):
    root, _ = synthetic_data
    line = _build(root, "mnist").describe()
    assert "mnist split 0" in line and "openness 0.2254" in line and "24 train" in line
    assert "18 known test, 12 unknown test" in line
