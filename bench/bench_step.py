"""Three training steps on the same model, batch and data, in one run (issue 6, DESIGN.md section 5):

1. ``plain``: SupCon + SimCLR on two views, no mixed view (``TrainStep`` with ``--aug none``);
2. ``gradmix``: fastgradmix's GradMix step (``TrainStep``: exact CAM gradient by autograd.grad down to
   the CAM layer, batched augmentation on the device, one extra forward of N images);
3. ``published``: the published GradMix code's way (``published_step.PublishedStyleStep``: an extra full
   forward and backward for the CAM, maps in NumPy on the host, a Python loop per sample).

Every step starts from the same weights with its own fused Adam, under the same autocast and memory
format. Reported: time per step (fastest round: on a shared machine interference only adds time), the
ratios gradmix / plain and published / gradmix, images/s, peak memory (CUDA) and the augmentation's
share of the GradMix step (from the step's own timer: CUDA events on a GPU).

CPU (no CUDA): ResNet-18 of width 32, 32 px, batch 64, fp32, so a run takes a few minutes.
GPU (chosen automatically): the TinyImageNet size, ResNet-18 (width 64), 64 px, batch 256, bf16 autocast,
channels_last.

The last test of that group checks the issue's targets on the ratios measured here: on CPU gradmix / plain
<= 1.7 and published / gradmix >= 1.4; on a GPU <= 1.6, >= 2 and an augmentation share <= 2%.

Precision and layout on the CPU (issue 16; skipped on a GPU, whose setting above is already bf16 +
channels_last): the GradMix step at ResNet-18 width 32, 32 px, batch 128 in fp32 and bf16 autocast, each
NCHW and channels_last, and the published way in fp32 NCHW (as published). Targets: bf16 + channels_last
>= 2x faster than fp32 NCHW, and the published fp32 step >= 3x slower than ours in bf16 + channels_last:

    pytest bench/bench_step.py -k precision --benchmark-only     # about 2 minutes on 2 idle cores
"""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from benchlib import DEVICE, ON_GPU, record, sync
from published_step import PublishedStyleStep, resize_bilinear

from fastgradmix.models import build_model
from fastgradmix.runs.config import Config
from fastgradmix.training.step import TrainStep, build_optimizer

# (batch, ResNet-18 width, image side, autocast, channels_last)
SETTING = (256, 64, 64, torch.bfloat16, True) if ON_GPU else (64, 32, 32, None, False)
CAM_LAYER = "conv5_2"
ROUNDS = 20 if ON_GPU else 10
TARGETS = {"gradmix_over_plain_max": 1.6, "published_over_gradmix_min": 2.0, "augment_share_max": 0.02} if ON_GPU \
    else {"gradmix_over_plain_max": 1.7, "published_over_gradmix_min": 1.4}

# per step name: seconds of every timed round, and the GradMix step's own timing fields
TIMES: dict[str, list[float]] = {}
FIELDS: dict[str, dict] = {}


def _config(aug: str) -> Config:
    batch, width, size, amp_dtype, channels_last = SETTING
    return Config(arch="resnet18", width=width, image_size=size, batch_size=batch, aug=aug, cam_layers=CAM_LAYER,
                  cam_grad="exact", gradmix_backend="auto", amp=amp_dtype is not None, amp_dtype="bf16",
                  channels_last=channels_last, lr=1e-4)


@pytest.fixture(scope="module")
def scene():
    batch, width, size, _, channels_last = SETTING
    torch.manual_seed(0)
    model = build_model("resnet18", 3, width=width, channels_last=channels_last).to(DEVICE).train()
    if ON_GPU:
        torch.backends.cudnn.benchmark = True  # as training/loop.py does
    return {
        "model": model,
        "view1": torch.randn(batch, 3, size, size, device=DEVICE),
        "view2": torch.randn(batch, 3, size, size, device=DEVICE),
        "labels": torch.randint(0, 20, (batch,), device=DEVICE),
    }


def _make(kind: str, scene):
    model = copy.deepcopy(scene["model"])
    optimizer = build_optimizer(model, 1e-4, 0.0)
    if kind == "published":
        return PublishedStyleStep(model, optimizer, _config("gradmix"), DEVICE, amp_dtype=SETTING[3])
    return TrainStep(model, optimizer, _config("none" if kind == "plain" else "gradmix"), DEVICE)


def _run(benchmark, scene, kind: str, role: str):
    batch, width, size, amp_dtype, channels_last = SETTING
    step = _make(kind, scene)
    generator = torch.Generator(device=DEVICE).manual_seed(0)
    times = TIMES.setdefault(kind, [])

    def one_step():
        begin = time.perf_counter()
        step(scene["view1"], scene["view2"], scene["labels"], generator)
        sync()
        times.append(time.perf_counter() - begin)

    for _ in range(2):  # warm-up: Adam's state, cudnn autotuning, kernel compilation
        one_step()
    times.clear()
    if isinstance(step, TrainStep):
        step.read_log_fields()  # restart the step's own timer after the warm-up
    if ON_GPU:
        torch.cuda.reset_peak_memory_stats(DEVICE)
    benchmark.group = f"training step b{batch} resnet18-w{width} {size}px"
    record(benchmark, role, kind, 1, batch=batch, size=size, width=width, cam_layer=CAM_LAYER,
           amp=str(amp_dtype), channels_last=channels_last)
    benchmark.pedantic(one_step, rounds=ROUNDS, warmup_rounds=0, iterations=1)
    info = {"images_per_s": batch / min(times)}
    note = f"{info['images_per_s']:.0f} images/s"
    if ON_GPU:
        info["peak_memory_mib"] = torch.cuda.max_memory_allocated(DEVICE) / 2**20
        note += f", peak memory {info['peak_memory_mib']:.0f} MiB"
    if isinstance(step, TrainStep):
        fields = step.read_log_fields()
        FIELDS[kind] = fields
        if kind == "gradmix":
            info.update(augment_share=fields["augment_share"], cam_grad_share=fields["cam_grad_share"])
            note += (f", augmentation {100 * fields['augment_share']:.2f}% and CAM gradient "
                     f"{100 * fields['cam_grad_share']:.2f}% of the step")
    benchmark.extra_info.update(info, note=note)


def test_plain_step(benchmark, scene):
    _run(benchmark, scene, "plain", "baseline")


def test_gradmix_step(benchmark, scene):
    _run(benchmark, scene, "gradmix", "candidate")
    benchmark.extra_info["ratio_over"] = "plain"


def test_published_step(benchmark, scene):
    _run(benchmark, scene, "published", "candidate")
    benchmark.extra_info["ratio_over"] = "gradmix"


def test_published_resize_is_bilinear():
    """The comparator's NumPy resize against PyTorch's (align_corners=False): the published way is real work."""
    image = np.random.default_rng(0).random((4, 4)).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(image)[None, None], size=(32, 32), mode="bilinear",
                             align_corners=False)[0, 0].numpy()
    assert np.allclose(resize_bilinear(image, 32, 32), expected, atol=1e-6)


def test_step_ratios_meet_the_targets():
    if not {"plain", "gradmix", "published"} <= TIMES.keys() or not all(TIMES.values()):
        pytest.skip("needs the three step benchmarks of this module in the same run")
    fastest = {kind: min(times) for kind, times in TIMES.items()}
    gradmix_over_plain = fastest["gradmix"] / fastest["plain"]
    published_over_gradmix = fastest["published"] / fastest["gradmix"]
    summary = (f"gradmix / plain = {gradmix_over_plain:.2f}x, published / gradmix = {published_over_gradmix:.2f}x, "
               f"augmentation {100 * FIELDS['gradmix']['augment_share']:.2f}% of the GradMix step "
               f"(fastest of {ROUNDS} rounds: plain {1e3 * fastest['plain']:.1f} ms, gradmix "
               f"{1e3 * fastest['gradmix']:.1f} ms, published {1e3 * fastest['published']:.1f} ms)")
    print(summary)
    assert gradmix_over_plain <= TARGETS["gradmix_over_plain_max"], summary
    assert published_over_gradmix >= TARGETS["published_over_gradmix_min"], summary
    if "augment_share_max" in TARGETS:
        assert FIELDS["gradmix"]["augment_share"] <= TARGETS["augment_share_max"], summary


# ---------------------------------------------------------------- precision and layout on the CPU (issue 16)

PRECISION_SETTING = (128, 32, 32)  # batch, ResNet-18 width, image side
PRECISION_ROUNDS = 5
# impl -> (step, precision, channels_last); the first is the group's baseline
PRECISION_ROWS = {
    "gradmix fp32 nchw": ("gradmix", "fp32", False),
    "gradmix fp32 channels_last": ("gradmix", "fp32", True),
    "gradmix bf16 nchw": ("gradmix", "bf16", False),
    "gradmix bf16 channels_last": ("gradmix", "bf16", True),
    "published fp32 nchw": ("published", "fp32", False),
}
PRECISION_TARGETS = {"bf16_channels_last_over_fp32_min": 2.0, "published_fp32_over_bf16_channels_last_min": 3.0}
PRECISION_TIMES: dict[str, list[float]] = {}


@pytest.fixture(scope="module")
def precision_scene():
    batch, width, size = PRECISION_SETTING
    torch.manual_seed(0)
    return {"model": build_model("resnet18", 3, width=width).train(),
            "view1": torch.randn(batch, 3, size, size), "view2": torch.randn(batch, 3, size, size),
            "labels": torch.randint(0, 20, (batch,))}


@pytest.mark.skipif(ON_GPU, reason="CPU rows: the GPU setting above is already bf16 + channels_last")
@pytest.mark.parametrize("impl", list(PRECISION_ROWS))
def test_precision_step(benchmark, precision_scene, impl):
    kind, precision, channels_last = PRECISION_ROWS[impl]
    batch, width, size = PRECISION_SETTING
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = copy.deepcopy(precision_scene["model"]).to(memory_format=memory_format)
    cfg = Config(arch="resnet18", width=width, image_size=size, batch_size=batch, aug="gradmix", cam_layers=CAM_LAYER,
                 cam_grad="exact", gradmix_backend="reference", precision=precision, amp=precision != "fp32",
                 amp_dtype="bf16", channels_last=channels_last, lr=1e-4)
    optimizer = build_optimizer(model, 1e-4, 0.0)
    amp_dtype = torch.bfloat16 if precision == "bf16" else None
    step = PublishedStyleStep(model, optimizer, cfg, DEVICE, amp_dtype=amp_dtype) if kind == "published" \
        else TrainStep(model, optimizer, cfg, DEVICE)
    generator = torch.Generator().manual_seed(0)
    times = PRECISION_TIMES.setdefault(impl, [])

    def one_step():
        begin = time.perf_counter()
        step(precision_scene["view1"], precision_scene["view2"], precision_scene["labels"], generator)
        times.append(time.perf_counter() - begin)

    for _ in range(2):  # warm-up: Adam's state, oneDNN's primitive caches
        one_step()
    times.clear()
    benchmark.group = f"precision b{batch} resnet18-w{width} {size}px (CPU)"
    first = impl == next(iter(PRECISION_ROWS))
    record(benchmark, "baseline" if first else "candidate", impl, 1, batch=batch, size=size, width=width,
           cam_layer=CAM_LAYER, precision=precision, channels_last=channels_last)
    benchmark.pedantic(one_step, rounds=PRECISION_ROUNDS, warmup_rounds=0, iterations=1)
    benchmark.extra_info.update(images_per_s=batch / min(times), note=f"{batch / min(times):.0f} images/s")


@pytest.mark.skipif(ON_GPU, reason="CPU rows")
def test_precision_ratios_meet_the_targets():
    if set(PRECISION_ROWS) - PRECISION_TIMES.keys() or not all(PRECISION_TIMES.values()):
        pytest.skip("needs every precision row of this module in the same run")
    fastest = {impl: min(times) for impl, times in PRECISION_TIMES.items()}
    ours = fastest["gradmix bf16 channels_last"]
    speedup = fastest["gradmix fp32 nchw"] / ours
    published = fastest["published fp32 nchw"] / ours
    summary = (f"bf16 + channels_last: {speedup:.2f}x faster than fp32 NCHW; published fp32 step {published:.2f}x "
               "slower than ours in bf16 + channels_last (fastest of "
               f"{PRECISION_ROUNDS} rounds: " + ", ".join(f"{impl} {1e3 * t:.0f} ms" for impl, t in fastest.items())
               + f"; {torch.get_num_threads()} torch threads)")
    print(summary)
    assert speedup >= PRECISION_TARGETS["bf16_channels_last_over_fp32_min"], summary
    assert published >= PRECISION_TARGETS["published_fp32_over_bf16_channels_last_min"], summary
