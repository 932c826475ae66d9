"""``--download``: fetch a dataset from its official location, verify its checksum, extract it safely.

Only run when asked. URLs and MD5 sums are torchvision's (MNIST, SVHN, CIFAR-10/100) and cs231n's
(Tiny ImageNet); the download itself is torchvision's ``download_url``, which checks the MD5. Archives
are extracted with :func:`archives.safe_extract`. Results land in the layouts the readers look for:

    mnist/raw/*.gz   svhn/{train,test}_32x32.mat   cifar-10-batches-py/   cifar-100-python/   tiny-imagenet-200/
"""

from __future__ import annotations

import sys
from pathlib import Path

from fastgradmix.common.errors import UserError
from fastgradmix.data.fetching.archives import safe_extract
from fastgradmix.data.readers.cifar import find_jpeg_dir, find_pickle_dir
from fastgradmix.data.readers.mnist import find_mnist_dir
from fastgradmix.data.readers.svhn import find_svhn_dir
from fastgradmix.data.readers.tinyimagenet import find_tinyimagenet_dir, read_wnids

TINYIMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINYIMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"


def _fetch(url: str, folder: Path, filename: str, md5: str) -> Path:
    from torchvision.datasets.utils import check_integrity, download_url

    target = folder / filename
    if check_integrity(str(target), md5):
        return target
    print(f"fastgradmix: downloading {url} -> {target}", file=sys.stderr)
    try:
        download_url(url, str(folder), filename, md5)
    except Exception as err:  # network and HTTP errors come in many types
        target.unlink(missing_ok=True)  # no partial file left behind
        raise UserError(f"download of {url} failed ({type(err).__name__}: {err}); check the network, or fetch "
                        f"the file by hand into {folder}") from None
    if not check_integrity(str(target), md5):
        target.unlink(missing_ok=True)
        raise UserError(f"the download of {url} does not match its MD5 checksum {md5} (deleted); try again")
    return target


def _mnist(root: Path) -> None:
    from torchvision.datasets import MNIST

    folder = root / "mnist" / "raw"
    for filename, md5 in MNIST.resources:
        error = None
        for mirror in MNIST.mirrors:  # the first mirror that works
            try:
                _fetch(mirror + filename, folder, filename, md5)
                error = None
                break
            except UserError as err:
                error = err
        if error is not None:
            raise error


def _svhn(root: Path) -> None:
    from torchvision.datasets import SVHN

    for split in ("train", "test"):
        url, filename, md5 = SVHN.split_list[split]
        _fetch(url, root / "svhn", filename, md5)


def _cifar(root: Path, dataset) -> None:
    archive = _fetch(dataset.url, root, dataset.filename, dataset.tgz_md5)
    safe_extract(archive, root)


def _cifar10(root: Path) -> None:
    from torchvision.datasets import CIFAR10

    _cifar(root, CIFAR10)


def _cifar100(root: Path) -> None:
    from torchvision.datasets import CIFAR100

    _cifar(root, CIFAR100)


def _tinyimagenet_complete(root: Path) -> bool:
    """All 200 classes' training folders present (the bundled copy holds only 80: --download completes it)."""
    folder = find_tinyimagenet_dir(root)
    if folder is None:
        return False
    return all((folder / "train" / wnid / "images").is_dir() for wnid in read_wnids(folder))


def _tinyimagenet(root: Path) -> None:
    archive = _fetch(TINYIMAGENET_URL, root, "tiny-imagenet-200.zip", TINYIMAGENET_MD5)
    safe_extract(archive, root)


# dataset -> (is it already there?, fetch it)
DATASETS = {
    "mnist": (lambda root: find_mnist_dir(root) is not None, _mnist),
    "svhn": (lambda root: find_svhn_dir(root, "train") is not None and find_svhn_dir(root, "test") is not None,
             _svhn),
    "cifar10": (lambda root: find_pickle_dir(root, "cifar10") is not None or find_jpeg_dir(root) is not None,
                _cifar10),
    "cifar100": (lambda root: find_pickle_dir(root, "cifar100") is not None, _cifar100),
    "tinyimagenet": (lambda root: _tinyimagenet_complete(root), _tinyimagenet),
}


def ensure_downloaded(datasets: list[str], data_root: str | Path) -> None:
    """Downloads each dataset that is not already under the data root."""
    root = Path(data_root).expanduser()
    for name in datasets:
        present, fetch = DATASETS[name]
        if not present(root):
            root.mkdir(parents=True, exist_ok=True)
            fetch(root)
