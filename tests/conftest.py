"""Shared test setup.

Triton kernels: without a CUDA device they run on CPU tensors in Triton's interpreter. ``triton.jit``
reads TRITON_INTERPRET when a kernel is decorated, so it is set here, before any test module imports
``fastgradmix.kernels``, and only when no GPU is present (on a GPU the same tests run the compiled kernels).
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# --precision auto (the default) picks bf16 where the processor multiplies bf16 natively: the suite's runs and
# their fp32 references would then depend on the machine. Here auto means fp32 everywhere, subprocesses
# included; tests of bf16 and of the detection ask for them explicitly (tests/test_precision.py).
os.environ["FASTGRADMIX_FAST_BF16"] = "0"


@pytest.fixture
def kernel_device() -> torch.device:
    """Where the Triton kernel tests run: the GPU when present, else the CPU under the interpreter."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture
def poison_kernel_outputs(monkeypatch):
    """Pre-fill every tensor the kernel wrappers allocate (outputs and scratch) with NaN, or the smallest
    int64 for integer outputs, so that an element a kernel fails to write shows up in the comparison."""
    from fastgradmix.kernels import _common

    real_empty, real_empty_like = _common.empty, _common.empty_like

    def poisoned(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.fill_(float("nan") if tensor.is_floating_point() else torch.iinfo(tensor.dtype).min)

    monkeypatch.setattr(_common, "empty", lambda *args, **kwargs: poisoned(real_empty(*args, **kwargs)))
    monkeypatch.setattr(_common, "empty_like", lambda tensor: poisoned(real_empty_like(tensor)))


# ---- datasets: the real archives in ../shared/data, and tiny synthetic copies of every layout ----

def shared_data_dir():
    """../shared/data beside the repository (or $FGM_SHARED_DATA), or None when absent."""
    from pathlib import Path

    for folder in (Path(__file__).resolve().parents[1].parent / "shared" / "data",
                   Path(os.environ.get("FGM_SHARED_DATA", "/nonexistent"))):
        if (folder / "unpack.sh").is_file():
            return folder
    return None


@pytest.fixture(scope="session")
def real_data(tmp_path_factory):
    """real_data("mnist" | "cifar10" | "tinyimagenet-split0" | "tinyimagenet") -> a data root holding it.

    Each archive is unpacked once per test session, shared by the xdist workers (a file lock guards the
    unpacking); the test is skipped when ../shared/data is absent. Nothing is downloaded.
    """
    import subprocess

    from filelock import FileLock

    shared = shared_data_dir()
    # under xdist every worker has its own basetemp; their common parent is shared by the session
    common = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        common = common.parent
    root = common / "real-data"

    def unpacked(name: str):
        if shared is None:
            pytest.skip("real datasets not available (../shared/data absent)")
        root.mkdir(parents=True, exist_ok=True)
        done = root / f".unpacked-{name}"
        with FileLock(str(root / f".{name}.lock")):
            if not done.exists():
                subprocess.run(["bash", str(shared / "unpack.sh"), str(root), name], check=True,
                               capture_output=True)
                done.touch()
        return root

    return unpacked


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    """(data root, ground truth): every standard dataset layout in miniature (tests/dataset_writers.py)."""
    from dataset_writers import write_all_layouts

    root = tmp_path_factory.mktemp("synthetic-data")
    truth = write_all_layouts(root, tiny_train_classes=list(range(200)))
    return root, truth
