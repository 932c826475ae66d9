"""A run's precision and layout: resolved once when training starts, read back by every later tool.

Training resolves ``--precision`` (``auto`` included) on its device and records the result in config.json
(``precision`` fp32/bf16/fp16, ``channels_last`` true/false, ``amp`` and ``amp_dtype`` consistent with
them), so a resumed run, ``fastgradmix.evaluate`` and the features after training use what training used.
A config.json from before ``--precision`` has none: its ``amp`` / ``amp_dtype`` say which (runs/config.merge).
"""

from __future__ import annotations

import dataclasses

import torch

from fastgradmix.common.precision import Precision, resolve_precision
from fastgradmix.runs.config import Config

EVAL_PRECISIONS = ("run", "auto", "fp32", "bf16", "fp16")


def resolve_run_config(cfg: Config, device: torch.device) -> Config:
    """``cfg`` with its precision and layout resolved for ``device`` (config.json records this form)."""
    precision = resolve_precision(cfg.precision, device, cfg.channels_last)
    low = precision.dtype is not None
    return dataclasses.replace(cfg, precision=precision.name, amp=low,
                               amp_dtype=precision.name if low else cfg.amp_dtype,
                               channels_last=precision.channels_last)


def run_precision(cfg: Config, device: torch.device, override: str = "run") -> Precision:
    """The precision a run's model is evaluated in on ``device``: ``run``, the one it trained in (a run trained
    in fp16 on a GPU is evaluated in bf16 on a CPU, which has no fp16 path); else ``override`` with its
    default layout (one of EVAL_PRECISIONS)."""
    if override == "run":
        name = "bf16" if cfg.precision == "fp16" and device.type != "cuda" else cfg.precision
        return resolve_precision(name, device, cfg.channels_last)
    return resolve_precision(override, device)
