"""Where each dataset lives under ``--data-root``, and the one-line error when it is not there.

Every reader looks for its dataset in a few conventional folders under the data root (the names that
``unpack.sh``, ``--download`` and torchvision use) and, when none holds it, raises :func:`missing` with
the folders it looked at, the layout it expects and how to get the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastgradmix.common.errors import UserError

# ../shared/data/unpack.sh beside the repository, when this is a source checkout
_UNPACK = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "unpack.sh"


@dataclass(frozen=True)
class Layout:
    dataset: str  # human name, e.g. "CIFAR-10"
    expected: str  # the on-disk layout, relative to the data root
    downloadable: bool  # an official download location exists (--download)
    bundled: str | None = None  # the unpack.sh name of the bundled real copy, if any


MNIST = Layout("MNIST", "mnist/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (torchvision's raw naming)",
               downloadable=True, bundled="mnist")
SVHN = Layout("SVHN", "svhn/{train,test}_32x32.mat (the official cropped-digits .mat files)", downloadable=True)
CIFAR10 = Layout("CIFAR-10", "cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta} (python pickles) "
                 "or cifar10-jpeg/{train,test}/<class name>/*.jpg", downloadable=True, bundled="cifar10")
CIFAR100 = Layout("CIFAR-100", "cifar-100-python/{train,test,meta} (python pickles)", downloadable=True)
TINYIMAGENET = Layout("Tiny ImageNet", "tiny-imagenet-200/{wnids.txt,train/<wnid>/images/*.JPEG,"
                      "val/val_annotations.txt,val/images/*.JPEG}", downloadable=True, bundled="tinyimagenet")
IMAGEFOLDER = Layout("image folder", "{train,test}/<class name>/<images> (one folder per class)",
                     downloadable=False)


def candidates(root: Path, *names: str) -> list[Path]:
    """The folders to look in: each conventional name under the root, then the root itself."""
    return [root / name for name in names] + [root]


def missing(layout: Layout, root: Path, looked_at: list[Path] | None = None, detail: str = "") -> UserError:
    """The one-line error: what is missing, where it was looked for, the layout expected, how to get it."""
    hints = []
    if layout.downloadable:
        hints.append("pass --download to fetch it")
    if layout.bundled:
        unpack = _UNPACK if _UNPACK.is_file() else Path("shared/data/unpack.sh")
        hints.append(f"unpack the bundled copy with {unpack} {root} {layout.bundled}")
    if not hints:
        hints.append("point --data-root at a folder in this layout")
    where = ", ".join(str(path) for path in dict.fromkeys(looked_at or [root]))
    detail = f" ({detail})" if detail else ""
    return UserError(f"{layout.dataset} not found{detail}: looked in {where}; expected {layout.expected} "
                     f"under --data-root {root}; " + " or ".join(hints))
