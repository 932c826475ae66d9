"""Per-operation benchmarks: layercam, window_argmax, paste_resized.

GPU: the batched reference (baseline) against the Triton kernels (candidate), with the naive per-sample
loop for scale. CPU: the naive per-sample loop (baseline) against the batched reference (candidate); the
kernels are skipped (the Triton interpreter is a correctness tool, not a CPU backend).
Each benchmark records the bytes its operation must move (extra_info["bytes"]), for the bandwidth table.
"""

from __future__ import annotations

import pytest
import torch
from benchlib import (
    DEVICE,
    ON_GPU,
    naive_layercam,
    naive_paste,
    naive_window_argmax,
    record,
    tensor_bytes,
    timed,
)

from fastgradmix.gradmix import reference
from fastgradmix.gradmix.augment import sample_box_sides

# (batch, image side, CAM layers (C, h, w), activation dtype, channels_last)
if ON_GPU:  # CIFAR at fp32 (conv4_2 + conv5_2 of ResNet-18), TinyImageNet-size maps under bf16 autocast
    SETTINGS = [(256, 32, [(256, 8, 8), (512, 4, 4)], torch.float32, False),
                (256, 64, [(256, 16, 16), (512, 8, 8)], torch.bfloat16, True)]
else:  # small enough for 2 CPU cores
    SETTINGS = [(64, 32, [(256, 8, 8), (512, 4, 4)], torch.float32, False)]
GPU_REPEAT = 10  # calls per timed round on the GPU, so one sync is shared by ten calls


def _roles():
    """impl -> role: the reference is the GPU baseline; on CPU the naive loop is the baseline."""
    if ON_GPU:
        return {"naive_loop": "context", "reference": "baseline", "triton": "candidate"}
    return {"naive_loop": "baseline", "reference": "candidate", "triton": "candidate"}


def _ops(impl):
    if impl == "triton":
        if not ON_GPU:
            pytest.skip("Triton kernels are benchmarked on a GPU only")
        from fastgradmix.kernels.layercam import layercam
        from fastgradmix.kernels.paste import paste_resized
        from fastgradmix.kernels.window_argmax import window_argmax

        return layercam, window_argmax, paste_resized
    if impl == "reference":
        return reference.layercam, reference.window_argmax, reference.paste_resized
    return naive_layercam, naive_window_argmax, naive_paste


def _inputs(setting, seed=0):
    batch, size, layers, dtype, channels_last = setting
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def tensor(shape, signed):
        draw = torch.randn if signed else torch.rand
        return draw(shape, generator=gen, device=DEVICE).to(dtype).contiguous(memory_format=memory_format)

    acts = [tensor((batch, c, h, w), signed=False) for c, h, w in layers]
    grads = [tensor((batch, c, h, w), signed=True) for c, h, w in layers]
    images = tensor((batch, 3, size, size), signed=True)
    maps = torch.rand(batch, size, size, generator=gen, device=DEVICE)
    box_h, box_w = sample_box_sides(batch, size, size, 0.1, 0.5, gen, DEVICE)
    return acts, grads, images, maps, box_h, box_w


def _label(setting):
    batch, size, layers, dtype, channels_last = setting
    layout = "channels_last" if channels_last else "nchw"
    return f"b{batch} {size}px {str(dtype).replace('torch.', '')} {layout}"


def _run(benchmark, op_name, setting, impl, fn, bytes_moved):
    repeat = GPU_REPEAT if (ON_GPU and impl != "naive_loop") else 1
    benchmark.group = f"{op_name} {_label(setting)}"
    batch, size = setting[0], setting[1]
    record(benchmark, _roles()[impl], impl, repeat, op=op_name, batch=batch, size=size, bytes=bytes_moved)
    fn()  # warm-up outside the timing: compiles the kernels, fills the caching allocator
    benchmark(timed(fn, repeat))


@pytest.mark.parametrize("impl", ["naive_loop", "reference", "triton"])
@pytest.mark.parametrize("setting", SETTINGS, ids=_label)
def test_layercam(benchmark, setting, impl):
    layercam, _, _ = _ops(impl)
    acts, grads, images, *_ = _inputs(setting)
    out_size = tuple(images.shape[-2:])
    # every activation and gradient read once, the fp32 maps written once
    moved = tensor_bytes(*acts, *grads) + images.shape[0] * out_size[0] * out_size[1] * 4
    _run(benchmark, "layercam", setting, impl, lambda: layercam(acts, grads, out_size), moved)


@pytest.mark.parametrize("impl", ["naive_loop", "reference", "triton"])
@pytest.mark.parametrize("setting", SETTINGS, ids=_label)
def test_window_argmax(benchmark, setting, impl):
    _, window_argmax, _ = _ops(impl)
    _, _, _, maps, box_h, box_w = _inputs(setting)
    moved = tensor_bytes(maps, box_h, box_w) + 2 * 8 * maps.shape[0]  # the map read once, (y, x) written
    _run(benchmark, "window_argmax", setting, impl, lambda: window_argmax(maps, box_h, box_w), moved)


@pytest.mark.parametrize("impl", ["naive_loop", "reference", "triton"])
@pytest.mark.parametrize("setting", SETTINGS, ids=_label)
def test_paste_resized(benchmark, setting, impl):
    _, _, paste_resized = _ops(impl)
    _, _, images, _, box_h, box_w = _inputs(setting)
    partner = images.roll(1, dims=0)
    size = images.shape[-1]
    y = ((size - box_h) // 2).contiguous()  # centred boxes: the position does not change the work
    x = ((size - box_w) // 2).contiguous()
    # an upper bound of the compulsory traffic: images and partner read once, the output written once
    # (in-box image pixels and untapped partner pixels need not be read)
    moved = 2 * tensor_bytes(images) + tensor_bytes(partner)
    _run(benchmark, "paste_resized", setting, impl, lambda: paste_resized(images, partner, y, x, box_h, box_w), moved)
