"""What ``--cam-schedule epoch`` costs per step against the default ``step`` schedule (issue 19).

The same model, batch and precision (``--precision auto`` on this machine) for both; the epoch schedule is
timed in a pasting epoch (its second), so each step pastes kept boxes, runs no CAM gradient pass of its own
and places next epoch's boxes after its backward. ResNet-18 width 32, 32 px, batch 128 on a CPU; width 64,
64 px, batch 256 on a GPU. Reported: the fastest of a few steps, and the ratio step / epoch.

    pytest bench/bench_cam_schedule.py --benchmark-only -s      # about a minute on 2 idle cores
"""

from __future__ import annotations

import copy
import time

import pytest
import torch
from benchlib import DEVICE, ON_GPU, record, sync

from fastgradmix.common.precision import resolve_precision
from fastgradmix.models import build_model
from fastgradmix.runs.config import Config
from fastgradmix.training.step import TrainStep, build_optimizer

BATCH, WIDTH, SIZE = (256, 64, 64) if ON_GPU else (128, 32, 32)
ROUNDS = 5
FASTEST: dict[str, float] = {}


@pytest.fixture(scope="module")
def scene():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    return {"model": build_model("resnet18", 3, width=WIDTH).train(),
            "view1": torch.randn(BATCH, 3, SIZE, SIZE, generator=generator).to(DEVICE),
            "view2": torch.randn(BATCH, 3, SIZE, SIZE, generator=generator).to(DEVICE),
            "labels": torch.randint(0, 6, (BATCH,), generator=generator).to(DEVICE),
            "rows": torch.arange(BATCH, device=DEVICE)}


@pytest.mark.parametrize("schedule", ["step", "epoch"])
def test_schedule_step(benchmark, scene, schedule):
    precision = resolve_precision("auto", DEVICE)
    model = copy.deepcopy(scene["model"]).to(DEVICE, memory_format=precision.memory_format)
    cfg = Config(arch="resnet18", width=WIDTH, image_size=SIZE, batch_size=BATCH, cam_layers="conv5_2",
                 cam_schedule=schedule, precision=precision.name, amp=precision.dtype is not None,
                 channels_last=precision.channels_last)
    step = TrainStep(model, build_optimizer(model, 1e-4, 0.0), cfg, DEVICE, num_images=BATCH)
    generator = torch.Generator(device=DEVICE).manual_seed(0)
    args = (scene["view1"], scene["view2"], scene["labels"], generator, scene["rows"])
    step.begin_epoch(0)
    step(*args)  # the epoch schedule records its first boxes; Adam's state, oneDNN's caches
    step.end_epoch()
    step.begin_epoch(1)  # from here the epoch schedule pastes the kept boxes
    step(*args)
    sync()
    times = []

    def one_step():
        begin = time.perf_counter()
        step(*args)
        sync()
        times.append(time.perf_counter() - begin)

    benchmark.group = f"cam schedule: resnet18-w{WIDTH} {SIZE}px b{BATCH}, {precision.describe()}"
    record(benchmark, "baseline" if schedule == "step" else "candidate", f"--cam-schedule {schedule}", 1,
           batch=BATCH, width=WIDTH, size=SIZE, precision=precision.name)
    benchmark.pedantic(one_step, rounds=ROUNDS, warmup_rounds=0, iterations=1)
    FASTEST[schedule] = min(times)


def test_print_the_ratio():
    if len(FASTEST) < 2:
        pytest.skip("needs both schedules in the same run")
    print(f"step schedule {1e3 * FASTEST['step']:.0f} ms, epoch schedule {1e3 * FASTEST['epoch']:.0f} ms per step: "
          f"the epoch schedule {FASTEST['step'] / FASTEST['epoch']:.2f}x the step schedule's speed")
