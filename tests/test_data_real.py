"""The real datasets in ../shared/data (unpacked once per session; skipped when absent): split 0 counts."""

from __future__ import annotations

import gzip
import json
from importlib import resources

import numpy as np
import pytest
import torch

from fastgradmix.data.protocols import build_protocol

SPLITS = json.loads(resources.files("fastgradmix.data").joinpath("osr_splits.json").read_text())
CIFAR10_OFFICIAL = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_mnist_split0_against_torchvision(real_data, tmp_path):
    """Our idx reader and split 0 against torchvision's MNIST reader on the same files."""
    from torchvision.datasets import MNIST

    root = real_data("mnist")
    data = build_protocol("mnist", 0, 32, root, progress=False)
    raw = tmp_path / "MNIST" / "raw"  # torchvision reads the uncompressed files
    raw.mkdir(parents=True)
    for gz in (root / "mnist" / "raw").glob("*.gz"):
        (raw / gz.stem).write_bytes(gzip.decompress(gz.read_bytes()))
    train, test = MNIST(str(tmp_path), train=True), MNIST(str(tmp_path), train=False)
    known = SPLITS["mnist"]["known"][0]
    train_keep = torch.isin(train.targets, torch.tensor(known))
    test_keep = torch.isin(test.targets, torch.tensor(known))
    assert data.train_images.shape == (int(train_keep.sum()), 1, 28, 28)
    assert (data.n_known_test, data.n_unknown_test) == (int(test_keep.sum()), int((~test_keep).sum()))
    assert (data.train_images.shape[0], data.n_known_test, data.n_unknown_test) == (35152, 5899, 4101)
    assert torch.equal(data.train_images[:, 0], train.data[train_keep])
    assert data.train_labels.tolist() == [known.index(d) for d in train.targets[train_keep].tolist()]
    assert torch.equal(data.test_images[:data.n_known_test, 0], test.data[test_keep])


@pytest.mark.slow
def test_cifar10_jpeg_folders_split0(real_data):
    root = real_data("cifar10")
    data = build_protocol("cifar10", 0, 32, root, progress=False)
    known = SPLITS["cifar10"]["known"][0]
    # CIFAR-10 has 5,000 training and 1,000 test images per class
    assert (data.train_images.shape[0], data.n_known_test, data.n_unknown_test) == (30000, 6000, 4000)
    assert data.train_images.shape[1:] == (3, 32, 32)
    assert data.known_classes == [CIFAR10_OFFICIAL[c] for c in known]
    folder_class = [CIFAR10_OFFICIAL.index(f.split("/")[-2]) for f in data.train_files]
    assert data.train_labels.tolist() == [known.index(c) for c in folder_class]
    test_class = [CIFAR10_OFFICIAL.index(f.split("/")[-2]) for f in data.test_files]
    assert data.test_labels.tolist() == [known.index(c) if c in known else -1 for c in test_class]
    assert np.bincount(data.train_labels.numpy()).tolist() == [5000] * 6


@pytest.mark.slow
def test_tinyimagenet_split0(real_data):
    root = real_data("tinyimagenet-split0")
    data = build_protocol("tinyimagenet", 0, 64, root, progress=False)
    assert (data.train_images.shape[0], data.n_known_test, data.n_unknown_test) == (10000, 1000, 9000)
    assert data.train_images.shape[1:] == (3, 64, 64) and data.num_known == 20 and len(data.unknown_classes) == 180
    wnids = sorted((root / "tiny-imagenet-200" / "wnids.txt").read_text().split())
    known = SPLITS["tinyimagenet"]["known"][0]
    assert data.known_classes == [wnids[c] for c in known]
    # training rows come from train/<wnid>/ of their label's class; test labels follow val_annotations.txt
    assert all(f"/train/{data.known_classes[label]}/" in f
               for f, label in zip(data.train_files, data.train_labels.tolist(), strict=True))
    annotations = dict(line.split("\t")[:2] for line in
                       (root / "tiny-imagenet-200" / "val" / "val_annotations.txt").read_text().splitlines())
    expected = [known.index(wnids.index(annotations[f.split("/")[-1]])) if wnids.index(annotations[f.split("/")[-1]])
                in known else -1 for f in data.test_files]
    assert data.test_labels.tolist() == expected
