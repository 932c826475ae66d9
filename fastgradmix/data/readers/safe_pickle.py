"""A restricted unpickler for dataset files that are pickles (CIFAR's python version): data, not code.

A pickle can name any importable callable and have it called while loading. This unpickler resolves
only the few globals a pickled NumPy array needs; any other global ends the load with an error naming
it, so a tampered dataset file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from fastgradmix.common.errors import UserError


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # NumPy >= 2
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _encode(text: str, encoding: str = "latin1") -> bytes:
    """Protocol-2 pickles written by Python 3 store bytes as _codecs.encode(str, 'latin1')."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return text.encode("latin1")


# (module, name) -> the object it may resolve to; NumPy 1.x and 2.x spell the array module differently
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: _encode,
}


class DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a dataset file")
        return _ALLOWED[(module, name)]()


def load_data_pickle(path: Path) -> Any:
    """Loads a Python 2 or 3 dataset pickle with bytes keys (``encoding='bytes'``) and only NumPy globals."""
    try:
        with open(path, "rb") as handle:
            return DataUnpickler(handle, encoding="bytes").load()
    except pickle.UnpicklingError as err:
        raise UserError(f"refusing to load {path}: {err}; the file is not a plain data pickle") from None
    except (OSError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as err:
        raise UserError(f"cannot read {path} ({type(err).__name__}: {err}); it is corrupt or truncated") from None
