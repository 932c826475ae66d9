"""model.json's schema: types, ranges and limits of every field a predictor uses, checked in one order.

Both predictors check these rules in this order and word their refusals alike (cpp/model_schema.cpp
holds the same table; tests/test_model_fuzz.py compares the two on hundreds of damaged folders), so a
damaged model folder is the same one line from either. The limits bound what reading a model folder
may allocate: an image_size of 60000 would ask for gigabytes per image, a bank claiming 2**32 rows
terabytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from fastgradmix.common.errors import UserError
from fastgradmix.common.schema import Field, check, short_value

FORMAT_NAME = "fastgradmix-model"
FORMAT_VERSION = 1

MAX_IMAGE_SIZE = 1024  # side S: a batch of 64 RGB inputs is then at most 805 MB of float32
MAX_CLASSES = 100_000
MAX_CLASS_NAME = 256  # characters
MAX_TOPK = 2**31 - 1  # an int32 in the C++ predictor
MAX_BANK_ROWS = 2**24
MAX_FEATURE_DIM = 65536
MAX_BANK_VALUES = 2**28  # rows x feature_dim: 1 GiB of float32 features
MAX_FILE_NAME = 255  # bytes of UTF-8, the usual file-system limit
MAX_DEVICE_NAME = 32
DEVICE_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")

TOP = {
    "format_version": Field("int", low=FORMAT_VERSION, high=FORMAT_VERSION),
    "class_names": Field("list", low=1, high=MAX_CLASSES, item=Field("str", low=1, high=MAX_CLASS_NAME)),
    "preprocessing": Field("dict"),
    "scoring": Field("dict"),
    "bank": Field("dict"),
    "programs": Field("dict"),
}
PREPROCESSING = {
    "image_size": Field("int", low=1, high=MAX_IMAGE_SIZE),
    "channels": Field("int", choices=(1, 3)),
    "mean": Field("list", low=1, high=3, item=Field("float", low=0, high=1)),  # of pixel values in [0, 1]
    "std": Field("list", low=1, high=3, item=Field("float", low=1e-6, high=1e6)),
}
SCORING = {
    "topk": Field("int", low=1, high=MAX_TOPK),
    "threshold": Field("float"),
    "tpr": Field("float", low=0, high=1),
}
BANK = {
    "file": Field("str", low=1, high=MAX_FILE_NAME),
    "size": Field("int", low=1, high=MAX_BANK_ROWS),
    "feature_dim": Field("int", low=1, high=MAX_FEATURE_DIM),
}
PROGRAM_FILE = Field("str", low=1, high=MAX_FILE_NAME)

# every table by the name its messages carry (the C++ twin prints its own for tests/test_native.py)
SCHEMAS = {"": TOP, "preprocessing": PREPROCESSING, "scoring": SCORING, "bank": BANK}


@dataclass(frozen=True)
class ModelMeta:
    """The fields of a checked model.json that the predictors use."""

    class_names: list[str]
    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    topk: int
    threshold: float
    tpr: float
    bank_file: str
    bank_size: int
    feature_dim: int
    programs: dict[str, str]


def _is_control(char: str) -> bool:
    return ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F


def _check_file_name(name: str, where: str) -> None:
    """A file of the model folder is named by a plain file name: no folder part, no way out of the folder."""
    if name in (".", "..") or "/" in name or "\0" in name or len(name.encode()) > MAX_FILE_NAME:
        raise UserError(f"{where}: must be a file name inside the model folder, got {short_value(name)}")


def check_meta(meta, label: str) -> ModelMeta:
    """Checks a parsed model.json (label: how messages name it) and returns its fields; the first
    problem is one UserError line."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise UserError(f"{label} is not a {FORMAT_NAME} file; create one with python -m fastgradmix.export")
    version = meta.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version != FORMAT_VERSION:
        raise UserError(f"{label} has format version {version}; the predictors read version {FORMAT_VERSION}: "
                        "export the model again")
    check(meta, TOP, label)
    for index, name in enumerate(meta["class_names"]):
        if any(map(_is_control, name)):
            raise UserError(f"{label}: class_names[{index}]: must not hold control characters, got "
                            f"{short_value(name)}")

    prep = check(meta["preprocessing"], PREPROCESSING, f"{label}: preprocessing")
    if len(prep["mean"]) != prep["channels"] or len(prep["std"]) != prep["channels"]:
        raise UserError(f"{label}: preprocessing: mean and std must hold one value per channel ({prep['channels']}), "
                        f"got {len(prep['mean'])} and {len(prep['std'])}")
    scoring = check(meta["scoring"], SCORING, f"{label}: scoring")
    bank = check(meta["bank"], BANK, f"{label}: bank")
    if bank["size"] * bank["feature_dim"] > MAX_BANK_VALUES:
        raise UserError(f"{label}: bank: size x feature_dim must be <= {MAX_BANK_VALUES}, got {bank['size']} x "
                        f"{bank['feature_dim']}")
    _check_file_name(bank["file"], f"{label}: bank: file")
    programs = meta["programs"]
    for device in programs:
        if not 1 <= len(device) <= MAX_DEVICE_NAME or not all(c in DEVICE_NAME_CHARACTERS for c in device):
            raise UserError(f"{label}: programs: keys must be device names (ASCII letters, digits, _), got "
                            f"{short_value(device)}")
    check(programs, dict.fromkeys(programs, PROGRAM_FILE), f"{label}: programs")
    for device, name in programs.items():
        _check_file_name(name, f"{label}: programs: {device}")

    return ModelMeta(
        class_names=list(meta["class_names"]), image_size=prep["image_size"], channels=prep["channels"],
        mean=tuple(float(v) for v in prep["mean"]), std=tuple(float(v) for v in prep["std"]),
        topk=scoring["topk"], threshold=float(scoring["threshold"]), tpr=float(scoring["tpr"]),
        bank_file=bank["file"], bank_size=bank["size"], feature_dim=bank["feature_dim"], programs=dict(programs))


def inside_folder(directory: str | os.PathLike, name: str) -> bool:
    """Whether directory/name, symlinks resolved, lies directly in the resolved directory."""
    folder = os.path.realpath(directory)
    return os.path.dirname(os.path.realpath(os.path.join(directory, name))) == folder
