"""The protocol registry: a name and a split index in, a checked OpenSetData out.

Open-set protocols (five splits each, class lists from osr_splits.json): mnist, svhn, cifar10 (6 known
/ 4 unknown of 10), cifar+10 and cifar+50 (4 CIFAR-10 classes known, 10 or 50 CIFAR-100 classes
unknown), tinyimagenet (20 known / 180 unknown, validation images as the test set). digits is the
bundled default. Closed-set (no unknown test images, one split): cifar10-closed, cifar100-closed,
tinyimagenet100-closed (the first 100 classes in sorted-wnid order). OOD pairs (one split): all of
CIFAR-10 known against the CIFAR-100 or SVHN test set. imagefolder: custom class folders with
``--known-classes`` (and optionally ``--unknown-classes``).

The readers behind them (each documented in its module) are plain functions others can call:
``read_mnist(root, train)``, ``read_svhn(root, split)``, ``read_cifar10(root, train)``,
``read_cifar100(root, train)``, ``read_tinyimagenet(root, split, classes)``; each returns a
LabelledImages with uint8 (N, C, H, W) images and the dataset's canonical labels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from fastgradmix.common.errors import UserError
from fastgradmix.data.assemble import Style, check_class_lists, make_open_set
from fastgradmix.data.openset import OpenSetData
from fastgradmix.data.readers.cache import DecodeOptions, default_cache_dir
from fastgradmix.data.readers.cifar import read_cifar10, read_cifar100
from fastgradmix.data.readers.digits import load_digits_protocol
from fastgradmix.data.readers.folders import class_folders, read_class_folders
from fastgradmix.data.readers.layout import IMAGEFOLDER, missing
from fastgradmix.data.readers.mnist import read_mnist
from fastgradmix.data.readers.svhn import read_svhn
from fastgradmix.data.readers.tinyimagenet import read_tinyimagenet
from fastgradmix.data.splits import known_classes as split_known
from fastgradmix.data.splits import load_splits

# per-channel means and standard deviations of each training set, in [0, 1] units
MNIST_STYLE = Style((0.1307,), (0.3081,), flip=False, color=False)
SVHN_STYLE = Style((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), flip=False, color=True)
CIFAR10_STYLE = Style((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STYLE = Style((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
TINYIMAGENET_STYLE = Style((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262))


@dataclass
class Request:
    """What a protocol builder gets."""

    name: str
    split: int
    image_size: int
    root: Path
    options: DecodeOptions
    known_classes: list[str] | None = None  # imagefolder only
    unknown_classes: list[str] | None = None


@dataclass(frozen=True)
class Protocol:
    build: Callable[[Request], OpenSetData]
    splits: int  # number of class splits (1: split 0 only)
    datasets: tuple[str, ...]  # what --download fetches


def _rest(known: list[int], n: int) -> list[int]:
    return [c for c in range(n) if c not in known]


def _digits(req: Request) -> OpenSetData:
    return load_digits_protocol(req.split, req.image_size)


def _mnist(req: Request) -> OpenSetData:
    known = split_known("mnist", req.split)
    return make_open_set(req.name, req.split, read_mnist(req.root, True), read_mnist(req.root, False), known,
                         _rest(known, 10), MNIST_STYLE)


def _svhn(req: Request) -> OpenSetData:
    known = split_known("svhn", req.split)
    return make_open_set(req.name, req.split, read_svhn(req.root, "train"), read_svhn(req.root, "test"), known,
                         _rest(known, 10), SVHN_STYLE)


def _cifar10(req: Request) -> OpenSetData:
    known = split_known("cifar10", req.split)
    train = read_cifar10(req.root, True, classes=known, options=req.options)
    test = read_cifar10(req.root, False, options=req.options)
    return make_open_set(req.name, req.split, train, test, known, _rest(known, 10), CIFAR10_STYLE)


def _cifar_plus(req: Request) -> OpenSetData:
    entry = load_splits()[req.name]
    known = split_known(req.name, req.split)
    unknown = list(entry["unknown_cifar100"][req.split])
    train = read_cifar10(req.root, True, classes=known, options=req.options)
    test = read_cifar10(req.root, False, classes=known, options=req.options)
    return make_open_set(req.name, req.split, train, test, known, unknown, CIFAR10_STYLE,
                         unknown_test=read_cifar100(req.root, False))


def _tinyimagenet(req: Request) -> OpenSetData:
    known = split_known("tinyimagenet", req.split)
    train = read_tinyimagenet(req.root, "train", classes=known, options=req.options)
    test = read_tinyimagenet(req.root, "val", options=req.options)
    return make_open_set(req.name, req.split, train, test, known, _rest(known, len(test.class_names)),
                         TINYIMAGENET_STYLE)


def _cifar10_closed(req: Request) -> OpenSetData:
    return make_open_set(req.name, 0, read_cifar10(req.root, True, options=req.options),
                         read_cifar10(req.root, False, options=req.options), list(range(10)), [], CIFAR10_STYLE)


def _cifar100_closed(req: Request) -> OpenSetData:
    return make_open_set(req.name, 0, read_cifar100(req.root, True), read_cifar100(req.root, False),
                         list(range(100)), [], CIFAR100_STYLE)


def _tinyimagenet100_closed(req: Request) -> OpenSetData:
    first = list(range(100))
    train = read_tinyimagenet(req.root, "train", classes=first, options=req.options)
    test = read_tinyimagenet(req.root, "val", classes=first, options=req.options)
    return make_open_set(req.name, 0, train, test, first, [], TINYIMAGENET_STYLE)


def _cifar10_vs(out_set: Callable[[Path], object]) -> Callable[[Request], OpenSetData]:
    def build(req: Request) -> OpenSetData:
        train = read_cifar10(req.root, True, options=req.options)
        test = read_cifar10(req.root, False, options=req.options)
        return make_open_set(req.name, 0, train, test, list(range(10)), None, CIFAR10_STYLE,
                             unknown_test=out_set(req.root))
    return build


def _imagefolder(req: Request) -> OpenSetData:
    """<root>/train/<class>/* and <root>/test/<class>/*; unknowns default to the test classes not known."""
    train_dir, test_dir = req.root / "train", req.root / "test"
    if not train_dir.is_dir() or not test_dir.is_dir():
        raise missing(IMAGEFOLDER, req.root, [train_dir, test_dir])
    if not req.known_classes:
        raise UserError("--protocol imagefolder needs --known-classes NAME,NAME,... (class folder names under "
                        f"{train_dir})")
    names = sorted(set(class_folders(train_dir)) | set(class_folders(test_dir)))
    unknown_names = req.unknown_classes
    if unknown_names is None:
        unknown_names = [name for name in class_folders(test_dir) if name not in req.known_classes]
    check_class_lists(req.name, req.known_classes, unknown_names, same_source=True)
    absent = [name for name in [*req.known_classes, *unknown_names] if name not in names]
    if absent:
        raise UserError(f"{req.name}: no class folder {', '.join(absent)} under {train_dir} or {test_dir} "
                        f"(found: {', '.join(names[:20])})")
    known = [names.index(name) for name in req.known_classes]
    unknown = [names.index(name) for name in unknown_names]
    options = DecodeOptions(req.options.cache_dir, req.options.skip_bad, req.options.progress, size=req.image_size)
    train = read_class_folders(train_dir, names, known, options, tag=f"imagefolder-train-{req.image_size}px")
    test = read_class_folders(test_dir, names, known + unknown, options, tag=f"imagefolder-test-{req.image_size}px")
    pixels = train.images.float().div_(255)  # (N, 3, size, size)
    mean = tuple(pixels.mean(dim=(0, 2, 3)).tolist())
    std = tuple(pixels.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())
    return make_open_set(req.name, 0, train, test, known, unknown, Style(mean, std))


PROTOCOLS: dict[str, Protocol] = {
    "digits": Protocol(_digits, 5, ()),
    "mnist": Protocol(_mnist, 5, ("mnist",)),
    "svhn": Protocol(_svhn, 5, ("svhn",)),
    "cifar10": Protocol(_cifar10, 5, ("cifar10",)),
    "cifar+10": Protocol(_cifar_plus, 5, ("cifar10", "cifar100")),
    "cifar+50": Protocol(_cifar_plus, 5, ("cifar10", "cifar100")),
    "tinyimagenet": Protocol(_tinyimagenet, 5, ("tinyimagenet",)),
    "cifar10-closed": Protocol(_cifar10_closed, 1, ("cifar10",)),
    "cifar100-closed": Protocol(_cifar100_closed, 1, ("cifar100",)),
    "tinyimagenet100-closed": Protocol(_tinyimagenet100_closed, 1, ("tinyimagenet",)),
    "cifar10-vs-cifar100": Protocol(_cifar10_vs(lambda root: read_cifar100(root, False)), 1, ("cifar10", "cifar100")),
    "cifar10-vs-svhn": Protocol(_cifar10_vs(lambda root: read_svhn(root, "test")), 1, ("cifar10", "svhn")),
    "imagefolder": Protocol(_imagefolder, 1, ()),
}


def protocol_splits(name: str) -> int:
    """How many class splits a protocol has (5 for the OSR protocols, 1 otherwise)."""
    return _protocol(name).splits


def _protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise UserError(f"unknown protocol {name!r}: choose one of {', '.join(sorted(PROTOCOLS))}")
    return PROTOCOLS[name]


def _class_list(text: str | list[str] | None) -> list[str] | None:
    if text is None or isinstance(text, list):
        return text
    return [name.strip() for name in text.split(",") if name.strip()] or None


def build_protocol(name: str, split: int, image_size: int, data_root: str | Path, *, download: bool = False,
                   skip_bad_images: bool = False, known_classes: str | list[str] | None = None,
                   unknown_classes: str | list[str] | None = None, progress: bool = True,
                   cache: bool = True) -> OpenSetData:
    """The protocol's OpenSetData for ``split``; every problem with the data is a one-line UserError.

    ``download`` fetches missing datasets from their official locations first. File-backed layouts are
    decoded once and cached under <data_root>/.fastgradmix-cache (``cache=False`` skips it).
    """
    protocol = _protocol(name)
    if not 0 <= split < protocol.splits:
        choices = "0" if protocol.splits == 1 else f"0..{protocol.splits - 1}"
        raise UserError(f"split {split} is out of range for {name}: choose {choices}")
    if (known_classes or unknown_classes) and name != "imagefolder":
        raise UserError(f"--known-classes / --unknown-classes apply to --protocol imagefolder only, not {name}")
    root = Path(data_root).expanduser()
    if download:
        if not protocol.datasets and name != "digits":
            raise UserError(f"--download: {name} has no official download location; put the data under {root}")
        from fastgradmix.data.fetching.download import ensure_downloaded

        ensure_downloaded(list(protocol.datasets), root)
    options = DecodeOptions(cache_dir=default_cache_dir(root) if cache and root.is_dir() else None,
                            skip_bad=skip_bad_images, progress=progress)
    request = Request(name, split, image_size, root, options, _class_list(known_classes),
                      _class_list(unknown_classes))
    try:
        data = protocol.build(request)
    except UserError as err:
        message = str(err)
        raise UserError(message if message.startswith(name) else f"protocol {name}: {message}") from None
    if data.train_images.dtype != torch.uint8:  # every reader returns uint8; a guard for new ones
        raise UserError(f"protocol {name}: training images are {data.train_images.dtype}, expected uint8")
    return data
