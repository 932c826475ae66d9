"""The AOTInductor entry points of torch (>= 2.6), found once, with a clear error on older torch."""

from __future__ import annotations

import logging

import torch

from fastgradmix.common.errors import UserError


def aoti_api():
    """(compile_and_package, load_package) from torch._inductor, or a UserError on torch < 2.6."""
    import torch._inductor as inductor

    compile_fn = getattr(inductor, "aoti_compile_and_package", None)
    load_fn = getattr(inductor, "aoti_load_package", None)
    if compile_fn is None or load_fn is None:
        raise UserError(f"exporting and loading AOTInductor packages needs torch >= 2.6 "
                        f"(torch._inductor.aoti_compile_and_package); this is torch {torch.__version__}: "
                        "upgrade torch")
    # CPU-only machines with a CUDA build of torch get a "No CUDA runtime is found" warning from the
    # C++ extension helpers that AOTInductor uses; it says nothing about the CPU program
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    return compile_fn, load_fn
