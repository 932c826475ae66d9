"""Each reader against tiny files written in its dataset's exact on-disk format (tests/dataset_writers.py)."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
import torch
from dataset_writers import (
    CIFAR10_NAMES,
    CIFAR100_NAMES,
    array_split,
    class_of_pixels,
    write_cifar10_pickles,
    write_class_folders,
    write_mnist,
)

from fastgradmix.data.readers.cache import DecodeOptions
from fastgradmix.data.readers.cifar import read_cifar10, read_cifar100
from fastgradmix.data.readers.folders import read_class_folders
from fastgradmix.data.readers.mnist import read_idx, read_mnist
from fastgradmix.data.readers.svhn import read_svhn
from fastgradmix.data.readers.tinyimagenet import read_tinyimagenet

QUIET = DecodeOptions(progress=False)


def _same_rows(read, truth_images, truth_labels):
    assert read.images.dtype == torch.uint8 and read.labels.dtype == torch.int64
    assert torch.equal(read.labels, torch.from_numpy(truth_labels))
    assert torch.equal(read.images, torch.from_numpy(truth_images))


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("subdir", ["mnist/raw", "MNIST/raw"])
def test_mnist_idx_raw_and_gz_in_both_namings(tmp_path, gz, subdir):
    truth = array_split(10, 3, 2, 1, 28, seed=1)
    write_mnist(tmp_path / subdir, truth, gz=gz)
    for train, part in ((True, "train"), (False, "test")):
        read = read_mnist(tmp_path, train)
        _same_rows(read, *truth[part])
        assert read.images.shape[1:] == (1, 28, 28)
        assert read.class_names == [str(d) for d in range(10)]


def test_idx_header_is_big_endian_and_checked(tmp_path):
    # a 2x3 uint8 idx written byte by byte: magic 0 0 8 2, dims 2 and 3 as big-endian uint32
    raw = bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6])
    (tmp_path / "a").write_bytes(raw)
    (tmp_path / "a.gz").write_bytes(gzip.compress(raw))
    for name in ("a", "a.gz"):
        assert read_idx(tmp_path / name).tolist() == [[1, 2, 3], [4, 5, 6]]
    (tmp_path / "short").write_bytes(raw[:-1])
    with pytest.raises(Exception, match="truncated"):
        read_idx(tmp_path / "short")


def test_svhn_mat_layout_and_label_ten_is_zero(synthetic_data):
    root, truth = synthetic_data
    for part in ("train", "test"):
        read = read_svhn(root, part)
        images, labels = truth["svhn"][part]
        _same_rows(read, images, labels)
        # the class is also stamped into the pixels: X (32, 32, 3, N) was transposed the right way round
        assert torch.equal(read.images[:, 0, 0, 0].long(), read.labels)
    assert (read.labels == 0).sum() == 3  # stored as 10 in the file


def test_svhn_file_stores_ten_for_zero(synthetic_data):
    from scipy.io import loadmat

    root, truth = synthetic_data
    stored = loadmat(root / "svhn" / "test_32x32.mat")["y"].ravel()
    assert 0 not in stored and (stored == 10).sum() == (truth["svhn"]["test"][1] == 0).sum()


def test_cifar10_pickles(synthetic_data):
    root, truth = synthetic_data
    for train, part in ((True, "train"), (False, "test")):
        read = read_cifar10(root, train)
        _same_rows(read, *truth["cifar10"][part])
        assert read.class_names == CIFAR10_NAMES and read.files is None


def test_cifar10_pickles_class_selection(synthetic_data):
    root, truth = synthetic_data
    read = read_cifar10(root, True, classes=[7, 2])
    images, labels = truth["cifar10"]["train"]
    keep = np.isin(labels, [7, 2])
    _same_rows(read, images[keep], labels[keep])  # stored order kept, canonical labels unchanged


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar_pickles_of_any_protocol(tmp_path, protocol):
    truth = array_split(10, 5, 1, 3, 32, seed=5)
    write_cifar10_pickles(tmp_path / "cifar-10-batches-py", truth, protocol=protocol)
    _same_rows(read_cifar10(tmp_path, True), *truth["train"])


def test_python2_style_meta_pickle_loads(tmp_path):
    """CIFAR's files are Python 2 pickles: str keys and values (BINSTRING) load as bytes."""
    from fastgradmix.data.readers.safe_pickle import load_data_pickle

    def binstring(text: bytes) -> bytes:
        return b"U" + bytes([len(text)]) + text  # SHORT_BINSTRING

    # {b'label_names': [b'cat', b'dog']} in protocol 2, as cPickle writes it
    blob = (b"\x80\x02}q\x00" + binstring(b"label_names") + b"]q\x01(" + binstring(b"cat") + binstring(b"dog")
            + b"es.")
    (tmp_path / "meta").write_bytes(blob)
    assert load_data_pickle(tmp_path / "meta") == {b"label_names": [b"cat", b"dog"]}


def test_cifar100_pickles_fine_labels(synthetic_data):
    root, truth = synthetic_data
    for train, part in ((True, "train"), (False, "test")):
        read = read_cifar100(root, train)
        _same_rows(read, *truth["cifar100"][part])
        assert read.class_names == CIFAR100_NAMES


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_cifar10_class_folders(tmp_path, ext):
    root = tmp_path / "data"
    for part, per_class in (("train", 3), ("test", 2)):
        write_class_folders(root / "cifar10-jpeg" / part, CIFAR10_NAMES, per_class, ext=ext)
    read = read_cifar10(root, True, classes=[9, 0, 4], options=QUIET)
    assert sorted(read.labels.tolist()) == [0, 0, 0, 4, 4, 4, 9, 9, 9]
    # the label is the official index of the folder's name, and the pixels come from that folder
    assert torch.equal(torch.from_numpy(class_of_pixels(read.images)), read.labels)
    assert [CIFAR10_NAMES.index(f.split("/")[-2]) for f in read.files] == read.labels.tolist()
    test = read_cifar10(root, False, options=QUIET)
    assert len(test) == 20 and torch.equal(torch.bincount(test.labels), torch.full((10,), 2))
    if ext == ".png":  # lossless: exact pixels
        assert (read.images[:, 2] == read.images[:, 2, :1, :1]).all()


def test_cifar10_prefers_pickles_over_folders(synthetic_data, tmp_path):
    root, truth = synthetic_data
    data = tmp_path / "both"
    shutil.copytree(root / "cifar-10-batches-py", data / "cifar-10-batches-py")
    write_class_folders(data / "cifar10-jpeg" / "train", CIFAR10_NAMES, 1)
    write_class_folders(data / "cifar10-jpeg" / "test", CIFAR10_NAMES, 1)
    assert len(read_cifar10(data, True)) == len(truth["cifar10"]["train"][1])


def test_cifar10_folders_must_use_official_names(tmp_path):
    names = CIFAR10_NAMES[:9] + ["lorry"]
    write_class_folders(tmp_path / "cifar10-jpeg" / "train", names, 1)
    write_class_folders(tmp_path / "cifar10-jpeg" / "test", names, 1)
    with pytest.raises(Exception, match="CIFAR-10 needs exactly"):
        read_cifar10(tmp_path, True, options=QUIET)


def test_tinyimagenet_sorted_wnids_and_val_annotations(synthetic_data):
    root, truth = synthetic_data
    wnids = truth["tinyimagenet_wnids"]
    listed = (root / "tiny-imagenet-200" / "wnids.txt").read_text().split()
    assert listed != sorted(listed) and wnids == sorted(listed)  # the file is unsorted; indices follow sorting
    val = read_tinyimagenet(root, "val", options=QUIET)
    assert len(val) == 400 and torch.equal(torch.bincount(val.labels), torch.full((200,), 2))
    annotations = dict(line.split("\t")[:2] for line in
                       (root / "tiny-imagenet-200" / "val" / "val_annotations.txt").read_text().splitlines())
    from_annotations = [wnids.index(annotations[f.split("/")[-1]]) for f in val.files]
    assert from_annotations == val.labels.tolist()
    assert torch.equal(torch.from_numpy(class_of_pixels(val.images)), val.labels)
    train = read_tinyimagenet(root, "train", classes=[150, 3], options=QUIET)
    assert train.labels.tolist() == [150] * 3 + [3] * 3
    assert torch.equal(torch.from_numpy(class_of_pixels(train.images)), train.labels)
    assert all(f"/train/{wnids[label]}/images/" in f for f, label in zip(train.files, train.labels.tolist(),
                                                                          strict=True))


def test_tinyimagenet_reads_only_the_classes_asked_for(synthetic_data, monkeypatch):
    import fastgradmix.data.readers.cache as cache

    root, _ = synthetic_data
    seen = []
    real_decode = cache.decode_files

    def spy(files, *args, **kwargs):
        seen.extend(files)
        return real_decode(files, *args, **kwargs)

    monkeypatch.setattr(cache, "decode_files", spy)
    read_tinyimagenet(root, "train", classes=[5, 6], options=DecodeOptions(progress=False))  # no cache dir
    assert len(seen) == 6 and {f.parent.parent.name for f in seen} == {sorted(
        (root / "tiny-imagenet-200" / "wnids.txt").read_text().split())[c] for c in (5, 6)}


def test_imagefolder_resizes_to_the_run_size(tmp_path):
    write_class_folders(tmp_path / "train", ["b", "a"], 2, ext=".png", size=20)
    options = DecodeOptions(progress=False, size=12)
    read = read_class_folders(tmp_path / "train", ["a", "b"], None, options, tag="t")
    assert read.images.shape == (4, 3, 12, 12)
    # folder "b" was written with class colour 0, "a" with 1; labels follow the given name order
    assert read.labels.tolist() == [0, 0, 1, 1] and class_of_pixels(read.images).tolist() == [1, 1, 0, 0]
