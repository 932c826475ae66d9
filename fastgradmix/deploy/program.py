"""The model folder's compiled program: the features Algorithm 1 scores (a model's ``embedder()``: encoder + head, or a
--method ce run's normalised pooled features) through torch.export and AOTInductor into a .pt2
package (one per device type), checked against the eager model, and loaded back onto a device.

The program maps normalised images (N, C, S, S) float32, any batch size N >= 1, to L2-normalised
features (N, D) float32. On CPU AOTInductor compiles C++ with the system compiler: about a minute for a
small ResNet.
"""

from __future__ import annotations

import re
import time
import zipfile
from pathlib import Path

import torch
from torch import nn

from fastgradmix.common.errors import UserError
from fastgradmix.deploy.aoti import aoti_api
from fastgradmix.deploy.printable import printable

# the compiled program must reproduce the eager features this closely (fp32, L2-normalised outputs); on
# CUDA both may run convolutions in TF32 (cuDNN's default), through different kernels
PROGRAM_TOLERANCE = {"cpu": 1e-4, "cuda": 1e-2}
# what the program was compiled for, recorded in the package's metadata: the compiled kernels index the
# input with fixed sizes, so an input of another size must be refused before it runs (cpp/predictor.cpp
# checks the same two keys)
INPUT_SHAPE_KEY = "fastgradmix.input_shape"  # "C,S,S"
FEATURE_DIM_KEY = "fastgradmix.feature_dim"  # "D"


def compile_program(model: nn.Module, channels: int, image_size: int, device: torch.device,
                    package_path: Path) -> float:
    """torch.export with a dynamic batch, then AOTInductor into ``package_path``; returns the max error
    of the compiled program against the eager model on a random batch (a self-check of the export)."""
    compile_fn, load_fn = aoti_api()
    model = model.to(device).eval()
    # an example batch of 2: a batch of 1 would let export specialise the batch dimension to 1
    example = torch.randn(2, channels, image_size, image_size, device=device)
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        feature_dim = model(example).shape[1]
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        metadata = {INPUT_SHAPE_KEY: f"{channels},{image_size},{image_size}", FEATURE_DIM_KEY: str(feature_dim)}
        compile_fn(program, package_path=str(package_path), inductor_configs={"aot_inductor.metadata": metadata})
        compiled = load_fn(str(package_path))
        check = torch.randn(3, channels, image_size, image_size, device=device)
        error = (compiled(check) - model(check)).abs().max().item()
    return error


def compile_checked(model: nn.Module, channels: int, image_size: int, device_type: str,
                    package_path: Path) -> dict:
    """compile_program, failing in one line when the program is off by more than PROGRAM_TOLERANCE;
    returns the compile report of model.json: seconds taken and the max error against the eager model."""
    start = time.perf_counter()
    error = compile_program(model, channels, image_size, torch.device(device_type), package_path)
    if not error <= PROGRAM_TOLERANCE[device_type]:
        raise UserError(f"the compiled {device_type} program differs from the eager model by {error:.2e} "
                        f"(> {PROGRAM_TOLERANCE[device_type]}); this torch's AOTInductor miscompiled it")
    return {"seconds": round(time.perf_counter() - start, 1), "max_error_vs_eager": error}


def load_program(program_path: Path, device: torch.device):
    """A .pt2 package loaded onto ``device`` (a callable: images -> features), or one UserError line."""
    _, load_package = aoti_api()
    if not zipfile.is_zipfile(program_path):  # checked here: torch logs noise before failing on these
        raise UserError(f"cannot load the compiled program {printable(program_path)} (not a .pt2 zip archive); export "
                        "the model again")
    try:
        if device.type == "cuda" and device.index is not None:  # a chosen GPU (torch >= 2.7 takes the index)
            return load_package(str(program_path), device_index=device.index)
        return load_package(str(program_path))
    except Exception as err:  # torch raises RuntimeError, zipfile errors, ... for a damaged package
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"cannot load the compiled program {printable(program_path)} ({first_line}); export the model "
                        "again") from None


def check_program_shapes(program, program_path: Path, channels: int, image_size: int, feature_dim: int) -> None:
    """Refuses a loaded program whose recorded input (C, S, S) and feature dimension differ from model.json's."""
    metadata = program.get_metadata()
    recorded = (metadata.get(INPUT_SHAPE_KEY, ""), metadata.get(FEATURE_DIM_KEY, ""))
    if not re.fullmatch(r"[0-9]{1,9},[0-9]{1,9},[0-9]{1,9}", recorded[0]) \
            or not re.fullmatch(r"[0-9]{1,9}", recorded[1]):
        raise UserError(f"{printable(program_path)} does not record the input it was compiled for (an export by an "
                        "older fastgradmix); export the model again")
    shape = tuple(int(n) for n in recorded[0].split(","))
    dim = int(recorded[1])
    if shape != (channels, image_size, image_size) or dim != feature_dim:
        raise UserError(f"{printable(program_path)} takes {shape[0]} x {shape[1]} x {shape[2]} inputs and gives {dim} "
                        f"features, but model.json says channels {channels}, image_size {image_size} and bank "
                        f"feature_dim {feature_dim}; export the model again")
