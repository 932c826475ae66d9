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

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fastgradmix.common.errors import UserError
from fastgradmix.common.files import write_bytes
from fastgradmix.common.schema import check_portable, read_json_file
from fastgradmix.deploy.model_schema import FORMAT_NAME, FORMAT_VERSION, check_meta, inside_folder
from fastgradmix.deploy.printable import printable

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "META_FILE", "BANK_FILE", "PROGRAM_FILES", "Preprocessing",
           "DeployedModel", "write_bank", "read_bank", "read_model_dir"]

META_FILE = "model.json"
BANK_FILE = "bank.bin"
PROGRAM_FILES = {"cpu": "model.cpu.pt2", "cuda": "model.cuda.pt2"}

BANK_MAGIC = b"FGMBANK1"
# magic, rows N, feature dim D, number of classes K, reserved (0): 24 bytes keep the arrays 8-byte aligned
BANK_HEADER = struct.Struct("<8sIIII")
NORM_TOLERANCE = 1e-3  # bank rows are L2-normalised float32: their norms are 1 within about 1e-7


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
        """The device's program file, checked to exist inside the folder (a link out of it is refused)."""
        if device_type not in self.programs:
            have = ", ".join(sorted(self.programs)) or "none"
            raise UserError(f"model folder {printable(self.directory)} has no {device_type} program (it has: "
                            f"{have}); export it with --devices {device_type} on a machine that has one")
        path = self.directory / self.programs[device_type]
        if not path.is_file():
            raise UserError(f"model folder {printable(self.directory)} is incomplete: {printable(path.name)} is "
                            "missing; export it again")
        if not inside_folder(self.directory, path.name):
            raise UserError(f"{printable(path)} is a link to a file outside the model folder; export the model "
                            "again")
        return path


def write_bank(path: Path, features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
    """features (N, D) float, labels (N,) int in [0, num_classes) -> bank.bin (written atomically)."""
    features_np = features.detach().cpu().to(torch.float32).numpy().astype("<f4", copy=False)
    labels_np = labels.detach().cpu().numpy().astype("<i4")
    rows, dim = features_np.shape
    header = BANK_HEADER.pack(BANK_MAGIC, rows, dim, num_classes, 0)
    write_bytes(path, header + np.ascontiguousarray(features_np).tobytes() + labels_np.tobytes())


def read_bank(path: Path, expect: tuple[int, int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """bank.bin -> features (N, D) float32, labels (N,) int64, number of classes K.

    The header is read first; with ``expect`` = (N, D, K) from model.json it must match before the arrays
    are read, and the file must be exactly as long as its header says, so nothing reads more than that.
    """
    shown = printable(path)
    if not path.is_file():
        raise UserError(f"model folder {printable(path.parent)} is incomplete: {printable(path.name)} is missing; "
                        "export it again")
    try:
        with open(path, "rb") as handle:
            length = os.fstat(handle.fileno()).st_size
            header = handle.read(BANK_HEADER.size)
            if len(header) < BANK_HEADER.size:
                raise UserError(f"{shown} is corrupt: {length} bytes, shorter than its {BANK_HEADER.size}-byte "
                                "header")
            magic, rows, dim, num_classes, _ = BANK_HEADER.unpack(header)
            if magic != BANK_MAGIC:
                raise UserError(f"{shown} is not a fastgradmix bank file (bad magic bytes); export the model again")
            if expect is not None and (rows, dim, num_classes) != expect:
                raise UserError(f"{shown} does not match {META_FILE} (classes, size or feature_dim differ); export "
                                "the model again")
            expected = BANK_HEADER.size + 4 * rows * dim + 4 * rows
            if length != expected:
                raise UserError(f"{shown} is corrupt: {length} bytes, expected {expected} for {rows} x {dim} "
                                "features and labels; export the model again")
            data = handle.read(expected - BANK_HEADER.size)
    except OSError as error:
        raise UserError(f"{shown}: cannot read ({error.strerror or error})") from None
    if len(data) != expected - BANK_HEADER.size:
        raise UserError(f"{shown} changed while it was read; export the model again")
    features = np.frombuffer(data, dtype="<f4", count=rows * dim).reshape(rows, dim)
    labels = np.frombuffer(data, dtype="<i4", count=rows, offset=4 * rows * dim)
    if rows and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(f"{shown} is corrupt: labels outside [0, {num_classes}); export the model again")
    bad_rows = _bad_feature_rows(features)
    if bad_rows.size:
        raise UserError(f"{shown} is corrupt: feature row {bad_rows[0]} is not finite or not L2-normalised; "
                        "export the model again")
    return torch.from_numpy(features.astype(np.float32)), torch.from_numpy(labels.astype(np.int64)), num_classes


def _bad_feature_rows(features: np.ndarray) -> np.ndarray:
    """Indices of the rows (N, D) holding NaN/inf or whose float64 norm is off 1 by more than NORM_TOLERANCE."""
    with np.errstate(over="ignore", invalid="ignore"):
        norms = np.sqrt(np.square(features.astype(np.float64)).sum(axis=1))  # (N,)
    return np.flatnonzero(~(np.isfinite(features).all(axis=1) & (np.abs(norms - 1.0) <= NORM_TOLERANCE)))


def read_model_dir(directory: str | Path) -> DeployedModel:
    """Reads and cross-checks a model folder (deploy/model_schema.py's rules, then the bank against them);
    every problem is one UserError line."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"model folder {printable(directory)} does not exist; create one with python -m "
                        "fastgradmix.export")
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise UserError(f"{printable(directory)} is not a model folder: {META_FILE} is missing; create one with "
                        "python -m fastgradmix.export")
    label = printable(meta_path)
    meta = check_portable(read_json_file(meta_path, label), label)
    fields = check_meta(meta, label)
    bank_path = directory / fields.bank_file
    if bank_path.is_file() and not inside_folder(directory, fields.bank_file):
        raise UserError(f"{printable(bank_path)} is a link to a file outside the model folder; export the model "
                        "again")
    features, labels, _ = read_bank(bank_path, expect=(fields.bank_size, fields.feature_dim, len(fields.class_names)))
    return DeployedModel(
        directory=directory, class_names=fields.class_names,
        preprocessing=Preprocessing(fields.image_size, fields.channels, fields.mean, fields.std),
        topk=fields.topk, threshold=fields.threshold, tpr=fields.tpr, bank_features=features, bank_labels=labels,
        programs=fields.programs, meta=meta,
    )
