"""Does ``--compile`` pay on a CPU? The GradMix step eager and compiled (training/compile.py's regions), in the
precision ``--precision auto`` picks on this machine, for two models (issue 16):

- ``digits``: the default digits run's step (ResNet-18 width 16, 16 px, 1 channel, batch 128, CAM conv4_2),
  which the default run takes 150 times (30 epochs of 5 steps);
- ``resnet18-32px``: ResNet-18 width 32, 32 px, 3 channels, batch 128, CAM conv5_2.

Per model: the steady step time eager (baseline) and compiled, and the compile time (the first two compiled
steps' wall time less two steady compiled steps: inductor compiles each region's forward and backward, for
the clean 2N batch and the mixed N batch). The last test prints, per model, after how many steps the
compiled run catches up with the eager one (compile time included) and whether the default digits run's
150 steps get there; ``--precision auto`` does not turn on ``--compile`` where they do not.

    pytest bench/bench_compile.py --benchmark-only -s     # compiles on the CPU: about 10 minutes on 2 cores
"""

from __future__ import annotations

import time

import pytest
import torch
from benchlib import ON_GPU, record

from fastgradmix.common.precision import resolve_precision
from fastgradmix.models import build_model
from fastgradmix.runs.config import Config
from fastgradmix.training.compile import compile_regions
from fastgradmix.training.step import TrainStep, build_optimizer

CPU = torch.device("cpu")
# name -> (channels, width, size, batch, CAM layer)
MODELS = {"digits": (1, 16, 16, 128, "conv4_2"), "resnet18-32px": (3, 32, 32, 128, "conv5_2")}
DIGITS_RUN_STEPS = 150  # the default digits run: 30 epochs x 5 steps
ROUNDS = 5
STEADY: dict[tuple[str, str], float] = {}  # (model, eager | compiled) -> fastest step, s
COMPILE_S: dict[str, float] = {}


@pytest.mark.skipif(ON_GPU, reason="a CPU question")
@pytest.mark.parametrize("mode", ["eager", "compiled"])
@pytest.mark.parametrize("model_name", list(MODELS))
def test_step(benchmark, model_name, mode):
    channels, width, size, batch, layer = MODELS[model_name]
    precision = resolve_precision("auto", CPU)
    torch.manual_seed(0)
    model = build_model("resnet18", channels, width=width).to(memory_format=precision.memory_format)
    cfg = Config(arch="resnet18", width=width, image_size=size, batch_size=batch, cam_layers=layer,
                 precision=precision.name, amp=precision.dtype is not None, channels_last=precision.channels_last)
    step = TrainStep(model, build_optimizer(model, 1e-4, 0.0), cfg, CPU)
    if mode == "compiled":
        torch._dynamo.reset()
        compile_regions(model, step.cam_modules)
    view1, view2 = torch.randn(batch, channels, size, size), torch.randn(batch, channels, size, size)
    labels = torch.randint(0, 6, (batch,))
    generator = torch.Generator().manual_seed(0)
    times: list[float] = []

    def one_step():
        begin = time.perf_counter()
        step(view1, view2, labels, generator)
        times.append(time.perf_counter() - begin)

    for _ in range(2):  # eager: oneDNN's caches; compiled: the compilation
        one_step()
    first_two = sum(times)
    times.clear()
    benchmark.group = f"compile on the CPU: {model_name} step, {precision.describe()}"
    record(benchmark, "baseline" if mode == "eager" else "candidate", mode, 1, model=model_name,
           precision=precision.name, channels_last=precision.channels_last)
    benchmark.pedantic(one_step, rounds=ROUNDS, warmup_rounds=0, iterations=1)
    STEADY[model_name, mode] = min(times)
    if mode == "compiled":
        COMPILE_S[model_name] = first_two - 2 * min(times)
        benchmark.extra_info["note"] = f"compile time {COMPILE_S[model_name]:.0f} s"
        torch._dynamo.reset()


@pytest.mark.skipif(ON_GPU, reason="a CPU question")
def test_when_compiling_pays():
    if len(STEADY) < 2 * len(MODELS):
        pytest.skip("needs every row of this module in the same run")
    lines = []
    for name in MODELS:
        eager, compiled, compile_s = STEADY[name, "eager"], STEADY[name, "compiled"], COMPILE_S[name]
        saved = eager - compiled
        break_even = compile_s / saved if saved > 0 else float("inf")
        lines.append(f"{name}: eager {1e3 * eager:.0f} ms, compiled {1e3 * compiled:.0f} ms per step "
                     f"({eager / compiled:.2f}x), compile {compile_s:.0f} s: pays after {break_even:.0f} steps"
                     + (f" (the default digits run has {DIGITS_RUN_STEPS})" if name == "digits" else ""))
    print("\n".join(lines))
    # --compile stays off by default on a CPU: right while the default run does not reach the break-even
    digits_saved = STEADY["digits", "eager"] - STEADY["digits", "compiled"]
    assert digits_saved <= 0 or COMPILE_S["digits"] / digits_saved > DIGITS_RUN_STEPS, "\n".join(lines)
