"""The released CIFAR-10-C arrays: <name>.npy (5 x 10,000 images, severity 1 first) + labels.npy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fastgradmix.common.errors import UserError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _load(path: Path) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"{path} not found: the released CIFAR-10-C folder holds <corruption>.npy and labels.npy")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {path} ({err}); is it a NumPy .npy file?") from None


def load_cifar10_c(directory: str | Path, name: str, severity: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 (N, 3, 32, 32) and CIFAR-10 labels int64 (N,) of one corruption and severity (1-5)."""
    directory = Path(directory).expanduser()
    images = _load(directory / f"{name}.npy")
    labels = _load(directory / "labels.npy")
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] % 5 or images.dtype != np.uint8:
        raise UserError(f"{directory / (name + '.npy')}: expected uint8 (5 * N, H, W, 3), got {images.dtype} "
                        f"{images.shape}")
    if labels.shape != images.shape[:1]:
        raise UserError(f"{directory / 'labels.npy'} holds {labels.shape[0]} labels for {images.shape[0]} images")
    per_severity = images.shape[0] // 5
    rows = slice((severity - 1) * per_severity, severity * per_severity)
    pixels = torch.from_numpy(np.array(images[rows])).permute(0, 3, 1, 2).contiguous()  # a writable copy
    return pixels, torch.from_numpy(np.asarray(labels[rows], dtype=np.int64))


def check_cifar10_c(directory: str | Path, names) -> None:
    """Fails early (before any work) when a requested corruption file or the labels are missing."""
    directory = Path(directory).expanduser()
    for name in [*names, "labels"]:
        if not (directory / f"{name}.npy").is_file():
            raise UserError(f"{directory / (name + '.npy')} not found: --corruption-data must point at the "
                            "released CIFAR-10-C folder (<corruption>.npy + labels.npy)")
