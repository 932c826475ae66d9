"""The deployed model folder: what `fastgradmix.export` writes and both predictors read.

The format is documented for other readers in docs/model_format.md; the native predictor (cpp/) reads
the same files. A folder holds:

- ``model.json``: format name and version, class names, preprocessing, top-k, threshold, calibration;
- ``bank.bin``: the class feature bank, a 24-byte header then little-endian float32 features and int32
  labels (raw arrays, so a C++ reader needs no library);
- ``model.cpu.pt2`` (and ``model.cuda.pt2`` when exported for CUDA): the AOTInductor packages mapping
  normalised images (N, C, S, S) float32 to L2-normalised features (N, D) float32.

Reading validates everything against everything else (sizes, dimensions, label range), so a truncated
or mismatched folder is reported in one line instead of failing somewhere later.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fastgradmix.common.errors import UserError
from fastgradmix.common.files import write_bytes

FORMAT_NAME = "fastgradmix-model"
FORMAT_VERSION = 1
META_FILE = "model.json"
BANK_FILE = "bank.bin"
PROGRAM_FILES = {"cpu": "model.cpu.pt2", "cuda": "model.cuda.pt2"}

BANK_MAGIC = b"FGMBANK1"
# magic, rows N, feature dim D, number of classes K, reserved (0): 24 bytes keep the arrays 8-byte aligned
BANK_HEADER = struct.Struct("<8sIIII")


@dataclass(frozen=True)
class Preprocessing:
    """How an image file becomes the model's input (identical to the evaluation's eval_view)."""

    image_size: int  # side S of the square model input
    channels: int  # 1 (RGB images are converted with the ITU-R 601 luma) or 3 (grayscale is replicated)
    mean: tuple[float, ...]  # per channel, in [0, 1] units
    std: tuple[float, ...]


@dataclass
class DeployedModel:
    """A model folder as read from disk, validated."""

    directory: Path
    class_names: list[str]
    preprocessing: Preprocessing
    topk: int
    threshold: float  # open-set score at or above which an image is a known class
    tpr: float  # the fraction of held-out knowns the threshold was calibrated to accept
    bank_features: torch.Tensor  # (N, D) float32, L2-normalised
    bank_labels: torch.Tensor  # (N,) int64 in [0, K)
    programs: dict[str, str]  # device type -> file name of its AOTInductor package
    meta: dict

    def program_path(self, device_type: str) -> Path:
        if device_type not in self.programs:
            have = ", ".join(sorted(self.programs)) or "none"
            raise UserError(f"model folder {self.directory} has no {device_type} program (it has: {have}); "
                            f"export it with --devices {device_type} on a machine that has one")
        path = self.directory / self.programs[device_type]
        if not path.is_file():
            raise UserError(f"model folder {self.directory} is incomplete: {path.name} is missing; export it again")
        return path


def write_bank(path: Path, features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
    """features (N, D) float, labels (N,) int in [0, num_classes) -> bank.bin (written atomically)."""
    features_np = features.detach().cpu().to(torch.float32).numpy().astype("<f4", copy=False)
    labels_np = labels.detach().cpu().numpy().astype("<i4")
    rows, dim = features_np.shape
    header = BANK_HEADER.pack(BANK_MAGIC, rows, dim, num_classes, 0)
    write_bytes(path, header + np.ascontiguousarray(features_np).tobytes() + labels_np.tobytes())


def read_bank(path: Path) -> tuple[torch.Tensor, torch.Tensor, int]:
    """bank.bin -> features (N, D) float32, labels (N,) int64, number of classes K."""
    if not path.is_file():
        raise UserError(f"model folder {path.parent} is incomplete: {path.name} is missing; export it again")
    data = path.read_bytes()
    if len(data) < BANK_HEADER.size:
        raise UserError(f"{path} is corrupt: {len(data)} bytes, shorter than its {BANK_HEADER.size}-byte header")
    magic, rows, dim, num_classes, _ = BANK_HEADER.unpack_from(data)
    if magic != BANK_MAGIC:
        raise UserError(f"{path} is not a fastgradmix bank file (bad magic bytes); export the model again")
    expected = BANK_HEADER.size + 4 * rows * dim + 4 * rows
    if len(data) != expected:
        raise UserError(f"{path} is corrupt: {len(data)} bytes, expected {expected} for {rows} x {dim} features "
                        "and labels; export the model again")
    offset = BANK_HEADER.size
    features = np.frombuffer(data, dtype="<f4", count=rows * dim, offset=offset).reshape(rows, dim)
    labels = np.frombuffer(data, dtype="<i4", count=rows, offset=offset + 4 * rows * dim)
    if rows and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(f"{path} is corrupt: labels outside [0, {num_classes}); export the model again")
    return torch.from_numpy(features.astype(np.float32)), torch.from_numpy(labels.astype(np.int64)), num_classes


def _require(meta: dict, key: str, kind, where: Path):
    value = meta.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        kind_name = "number" if isinstance(kind, tuple) else kind.__name__
        raise UserError(f"{where} is corrupt: field {key!r} is missing or not a {kind_name}; export the model again")
    return value


def _read_meta(directory: Path) -> tuple[Path, dict]:
    """The folder's model.json path and content, checked to be this format and version."""
    if not directory.is_dir():
        raise UserError(f"model folder {directory} does not exist; create one with python -m fastgradmix.export")
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise UserError(f"{directory} is not a model folder: {META_FILE} is missing; create one with "
                        "python -m fastgradmix.export")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"{meta_path} is corrupt ({err}); export the model again") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise UserError(f"{meta_path} is not a {FORMAT_NAME} file; create one with python -m fastgradmix.export")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise UserError(f"{meta_path} has format version {version!r}; this fastgradmix reads version "
                        f"{FORMAT_VERSION}: export the model again")
    return meta_path, meta


def read_model_dir(directory: str | Path) -> DeployedModel:
    """Reads and cross-checks a model folder; every problem is one UserError line."""
    directory = Path(directory)
    meta_path, meta = _read_meta(directory)
    class_names = _require(meta, "class_names", list, meta_path)
    if not class_names or not all(isinstance(name, str) for name in class_names):
        raise UserError(f"{meta_path} is corrupt: class_names must be a non-empty list of strings")
    prep = _require(meta, "preprocessing", dict, meta_path)
    scoring = _require(meta, "scoring", dict, meta_path)
    bank_meta = _require(meta, "bank", dict, meta_path)
    programs = _require(meta, "programs", dict, meta_path)

    image_size = _require(prep, "image_size", int, meta_path)
    channels = _require(prep, "channels", int, meta_path)
    mean = _require(prep, "mean", list, meta_path)
    std = _require(prep, "std", list, meta_path)
    if image_size < 1 or channels not in (1, 3) or len(mean) != channels or len(std) != channels \
            or not all(isinstance(v, (int, float)) for v in mean + std) or min(std) <= 0:
        raise UserError(f"{meta_path} is corrupt: preprocessing needs image_size >= 1, channels 1 or 3, and one "
                        "mean and one positive std per channel")
    topk = _require(scoring, "topk", int, meta_path)
    threshold = _require(scoring, "threshold", (int, float), meta_path)
    tpr = _require(scoring, "tpr", (int, float), meta_path)
    if topk < 1 or not math.isfinite(threshold):
        raise UserError(f"{meta_path} is corrupt: scoring needs topk >= 1 and a finite threshold")

    bank_file = _require(bank_meta, "file", str, meta_path)
    features, labels, num_classes = read_bank(directory / bank_file)
    if num_classes != len(class_names) or features.shape[0] != bank_meta.get("size") \
            or features.shape[1] != bank_meta.get("feature_dim"):
        raise UserError(f"{directory / bank_file} does not match {META_FILE} (classes, size or feature_dim "
                        "differ); export the model again")
    if features.shape[0] == 0:
        raise UserError(f"{directory / bank_file} holds no features; export the model again")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in programs.items()):
        raise UserError(f"{meta_path} is corrupt: programs must map device names to file names")

    return DeployedModel(
        directory=directory, class_names=list(class_names),
        preprocessing=Preprocessing(image_size, channels, tuple(float(v) for v in mean), tuple(float(v) for v in std)),
        topk=topk, threshold=float(threshold), tpr=float(tpr), bank_features=features, bank_labels=labels,
        programs=dict(programs), meta=meta,
    )
