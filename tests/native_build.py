"""The native predictor's build, shared by its tests (test_native.py, test_model_fuzz.py): CMake builds
fgm-predict and fgm-json-check once per test session into a shared folder; the tests skip when cmake, a
C++ compiler, libjpeg/libpng or nlohmann/json development files are missing (CI installs them: .ci/run)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from deploy_helpers import shared_folder

REPO = Path(__file__).resolve().parents[1]
MISSING_LIBRARY = {"Could NOT find JPEG": "libjpeg-dev", "Could NOT find PNG": "libpng-dev",
                   "Could NOT find nlohmann_json": "nlohmann-json3-dev"}


def _build(folder: Path) -> None:
    """Configures and builds into folder/build; writes folder/status: ok, skip: ..., or fail: ..."""
    torch_dir = os.path.dirname(torch.__file__)
    steps = [["cmake", "-S", str(REPO), "-B", str(folder / "build"), f"-DTORCH_DIR={torch_dir}",
              "-DCMAKE_BUILD_TYPE=Release"],
             ["cmake", "--build", str(folder / "build"), "--parallel", "2"]]
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True, timeout=1500)
        log = result.stdout + result.stderr
        (folder / "build.log").open("a").write(log)
        if result.returncode != 0:
            missing = [(found, package) for found, package in MISSING_LIBRARY.items() if found in log]
            status = f"skip: {missing[0][0]} (apt-get install {missing[0][1]})" if missing else \
                f"fail: {' '.join(step)}\n{log[-3000:]}"
            (folder / "status").write_text(status)
            return
    (folder / "status").write_text("ok")


def native_program(tmp_path_factory) -> Path:
    """build/fgm-predict (fgm-json-check beside it), built once per session; skips without the tools."""
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install cmake g++)")
    folder = shared_folder(tmp_path_factory, "native-build", _build)
    status = (folder / "status").read_text()
    if status.startswith("skip: "):
        pytest.skip(status[6:])
    assert status == "ok", status
    return folder / "build" / "fgm-predict"
