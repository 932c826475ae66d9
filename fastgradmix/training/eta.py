"""The run's expected duration, printed once after the first logged steps, with advice for a faster CPU run.

Training: the steps left times the seconds per step of the latest log window. The first window is not
used: it holds the warm-up (first allocations, the input pipeline starting, ``--compile``'s compilation).
So the line comes after the second window (after the first when this invocation has only one).

Evaluation: the final evaluation embeds every known training image (the bank) and every test image once,
in eval mode without gradients, in the run's precision. Its cost per image is measured, not guessed from
the training step (whose forward/backward ratio depends on the model, the precision and the batch): one
``probe`` batch is embedded with the evaluation's own code. The probe reads no random numbers and leaves
the BatchNorm statistics alone (eval mode), so the run's numbers do not change.

On a CPU the line names the settings that would be faster and are not in use: ``--precision auto`` when
the processor has native bf16 (common/precision.py), and an input pipeline faster than ``--loader torch``
(README "Input pipeline").
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from fastgradmix.common.precision import fast_bf16_here
from fastgradmix.data.augment import AugmentSpec
from fastgradmix.data.openset import OpenSetData
from fastgradmix.distributed import collectives
from fastgradmix.evaluation.features import extract_features
from fastgradmix.runs.config import Config
from fastgradmix.runs.precision import run_precision

PROBE_IMAGES = 256  # at most; the evaluation's batch when smaller


def format_duration(seconds: float) -> str:
    """'42 s', '3 min 05 s', '2 h 07 min'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def about(seconds: float) -> str:
    """'about 42 s', or 'under 1 s'."""
    return "under 1 s" if seconds < 0.5 else f"about {format_duration(seconds)}"


def cpu_advice(device_type: str, precision: str, fast_bf16: bool, loader: str) -> list[str]:
    """The faster settings a CPU run does not use (none on a GPU)."""
    if device_type != "cpu":
        return []
    advice = []
    if precision == "fp32" and fast_bf16:
        advice.append("--precision auto (this CPU has native bf16: bf16 autocast + channels_last)")
    if loader == "torch":
        advice.append("--loader device (or dali, pip install 'fastgradmix[dali]')")
    return advice


class RunEta:
    """Prints one line of expected times: call ``after_window`` at every log window of the training loop.

    end_step: the step this invocation ends at (all epochs, or --stop-after's); eval_images: images the final
    evaluation embeds (per process, under torchrun); probe: embeds a batch the evaluation's way and returns
    (seconds, images), or None to leave the evaluation out; advice: from ``cpu_advice``.
    """

    def __init__(self, end_step: int, eval_images: int, probe: Callable[[], tuple[float, int]] | None,
                 advice: list[str]):
        self.end_step, self.eval_images, self.probe, self.advice = end_step, eval_images, probe, advice
        self.windows_seen = 0
        self.done = False

    def after_window(self, steps_done: int, window_steps: int, window_seconds: float) -> str | None:
        """The line, once: after the second window, or after the first when it ended the training. None
        otherwise. steps_done: the run's steps so far (the step numbers of metrics.jsonl, plus one)."""
        if self.done:
            return None
        self.windows_seen += 1
        if self.windows_seen < 2 and steps_done < self.end_step:
            return None
        self.done = True
        per_step = window_seconds / max(window_steps, 1)
        steps_left = max(self.end_step - steps_done, 0)
        parts = [f"expected: training {about(per_step * steps_left)} more "
                 f"({per_step * 1e3:.0f} ms per step, {steps_left} steps left)"]
        if self.probe is not None:
            seconds, images = self.probe()
            parts.append(f"evaluation {about(seconds / max(images, 1) * self.eval_images)} "
                         f"({self.eval_images} images)")
        line = ", then ".join(parts)
        if self.advice:
            line += "; faster on this CPU: " + ", ".join(self.advice)
        return line


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    """(seconds, what fn returned): fn embeds images and returns how many."""
    start = time.perf_counter()
    images = fn()
    return time.perf_counter() - start, images


def run_eta(cfg: Config, data: OpenSetData, spec: AugmentSpec, model: nn.Module, device: torch.device,
            steps_per_epoch: int, end_epoch: int) -> RunEta:
    """The training loop's RunEta: the evaluation's part when this invocation evaluates (no --stop-after
    before the last epoch), probed on the bare model with the evaluation's own feature code."""
    probe = None
    if end_epoch == cfg.epochs:
        images = data.train_images[:min(cfg.eval_batch_size, PROBE_IMAGES)]  # (n, C, H, W) uint8
        precision = run_precision(cfg, device)

        def embed() -> int:
            extract_features(model, images, spec, images.shape[0], device, precision, progress=False)
            return images.shape[0]

        def probe() -> tuple[float, int]:
            if cfg.compile:  # the eval-mode regions compile on first use: not part of the cost per image
                embed()
            return timed(embed)

    eval_images = data.train_images.shape[0] + data.test_images.shape[0]  # the bank, then every test image
    advice = cpu_advice(device.type, cfg.precision, fast_bf16_here(device), cfg.loader)
    return RunEta(end_epoch * steps_per_epoch, -(-eval_images // collectives.world_size()), probe, advice)
