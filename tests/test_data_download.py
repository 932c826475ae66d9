"""--download wiring without a network: a stand-in for torchvision's download_url serves local archives."""

from __future__ import annotations

import hashlib
import shutil
import tarfile

import pytest
import torchvision.datasets
import torchvision.datasets.utils as tv_utils
from dataset_writers import array_split, write_cifar10_pickles

from fastgradmix.common.errors import UserError
from fastgradmix.data.protocols import build_protocol


@pytest.fixture
def served(monkeypatch):
    """url -> local file; records every URL requested. Anything else fails as an offline machine would."""
    files, requested = {}, []

    def fake_download_url(url, root, filename=None, md5=None, max_redirect_hops=3):
        requested.append(url)
        if url not in files:
            raise OSError("network unreachable")
        shutil.copy(files[url], f"{root}/{filename}")

    monkeypatch.setattr(tv_utils, "download_url", fake_download_url)
    return files, requested


def _cifar10_archive(tmp_path):
    source = tmp_path / "source"
    write_cifar10_pickles(source / "cifar-10-batches-py", array_split(10, 5, 2, 3, 32, seed=9))
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as bundle:
        bundle.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


def test_nothing_is_downloaded_unless_asked(tmp_path, served):
    _, requested = served
    with pytest.raises(UserError, match="CIFAR-10 not found"):
        build_protocol("cifar10", 0, 32, tmp_path / "data", progress=False)
    assert requested == []


def test_download_verifies_and_extracts(tmp_path, served, monkeypatch):
    files, requested = served
    archive, md5 = _cifar10_archive(tmp_path)
    files[torchvision.datasets.CIFAR10.url] = archive
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "tgz_md5", md5)  # our stand-in archive's checksum
    data = build_protocol("cifar10", 0, 32, tmp_path / "data", download=True, progress=False)
    assert requested == [torchvision.datasets.CIFAR10.url]
    assert data.train_images.shape[0] == 6 * 5 and (tmp_path / "data" / "cifar-10-batches-py").is_dir()
    build_protocol("cifar10", 0, 32, tmp_path / "data", download=True, progress=False)
    assert len(requested) == 1  # present now: not fetched again


def test_download_with_a_wrong_checksum_stops(tmp_path, served):
    files, _ = served
    archive, _ = _cifar10_archive(tmp_path)
    files[torchvision.datasets.CIFAR10.url] = archive  # not the official file: its MD5 differs
    with pytest.raises(UserError, match="does not match its MD5 checksum"):
        build_protocol("cifar10", 0, 32, tmp_path / "data", download=True, progress=False)
    assert not (tmp_path / "data" / "cifar-10-batches-py").exists()
    assert not (tmp_path / "data" / "cifar-10-python.tar.gz").exists()  # the bad file is not kept


def test_download_failure_is_one_line(tmp_path, served):
    with pytest.raises(UserError, match=r"download of http.*failed .*network unreachable"):
        build_protocol("svhn", 0, 32, tmp_path / "data", download=True, progress=False)
