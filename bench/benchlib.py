"""Helpers for the benchmarks: the machine, timing with device syncs, bytes moved, naive per-sample loops.

The naive loops are what one writes without batching: a Python loop over the samples with host reads of
the box sizes. They are baselines for speed only; tests/ checks the real implementations.
"""

from __future__ import annotations

import datetime
import os
import platform

import numpy as np
import torch
import torch.nn.functional as F

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ON_GPU = DEVICE.type == "cuda"


def device_name() -> str:
    if ON_GPU:
        return torch.cuda.get_device_name(DEVICE)
    model = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def peak_bandwidth_bytes_per_s() -> float | None:
    """The GPU's theoretical DRAM bandwidth (double data rate x bus width), when torch reports both."""
    if not ON_GPU:
        return None
    props = torch.cuda.get_device_properties(DEVICE)
    clock_khz = getattr(props, "memory_clock_rate", 0)
    bus_bits = getattr(props, "memory_bus_width", 0)
    return 2 * clock_khz * 1e3 * bus_bits / 8 if clock_khz and bus_bits else None


def machine_info() -> dict:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "device": device_name(),
        "torch": torch.__version__,
        "triton": triton_version,
        "date": datetime.date.today().isoformat(),
        "peak_bandwidth_bytes_per_s": peak_bandwidth_bytes_per_s(),
    }


def sync() -> None:
    if ON_GPU:
        torch.cuda.synchronize()


def timed(fn, repeat: int):
    """A benchmark body: ``repeat`` calls of fn, then a device sync, so GPU work is inside the timing and
    the sync's own cost is shared by ``repeat`` calls. The reports divide by ``calls_per_round``."""

    def run():
        for _ in range(repeat):
            fn()
        sync()

    return run


def record(benchmark, role: str, impl: str, repeat: int, **info) -> None:
    """extra_info of every benchmark: what ran, on what, and how to turn its time into a ratio.

    role: "baseline" (the group's reference point), "candidate" (compared with it) or "context" (shown
    for scale, e.g. a whole training step).
    """
    benchmark.extra_info.update(machine_info())
    benchmark.extra_info.update(role=role, impl=impl, calls_per_round=repeat, **info)


def tensor_bytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


# --------------------------------------------------------------------------- naive per-sample loops


def naive_layercam(acts, grads, out_size, eps=1e-7):
    """LayerCAM one sample and one layer at a time."""
    batch = acts[0].shape[0]
    maps = torch.zeros(batch, *out_size, device=acts[0].device)
    for i in range(batch):
        for a, g in zip(acts, grads, strict=True):
            cam = (g[i].float().clamp_min(0) * a[i].float()).sum(0).clamp_min(0)  # (h, w)
            cam = cam / (cam.max() + eps)
            maps[i] += F.interpolate(cam[None, None], size=out_size, mode="bilinear", align_corners=False)[0, 0]
    return maps


def naive_window_argmax(maps, box_h, box_w):
    """Per sample: read the box size to the host, box sums by average pooling, first argmax."""
    tops, lefts = [], []
    for i in range(maps.shape[0]):
        bh, bw = int(box_h[i]), int(box_w[i])
        sums = F.avg_pool2d(maps[i][None, None].float(), (bh, bw), stride=1)[0, 0]  # (H - bh + 1, W - bw + 1)
        best = int(sums.argmax())
        tops.append(best // sums.shape[1])
        lefts.append(best % sums.shape[1])
    return torch.tensor(tops, device=maps.device), torch.tensor(lefts, device=maps.device)


def naive_paste(images, partner, y, x, box_h, box_w):
    """Copy, then per sample resize the partner and assign it into the box."""
    mixed = images.clone()
    for i in range(images.shape[0]):
        top, left, bh, bw = int(y[i]), int(x[i]), int(box_h[i]), int(box_w[i])
        patch = F.interpolate(partner[i:i + 1].float(), size=(bh, bw), mode="bilinear", align_corners=False)
        mixed[i, :, top:top + bh, left:left + bw] = patch[0].to(images.dtype)
    return mixed


def host_window_argmax(cam: np.ndarray, bh: int, bw: int) -> tuple[int, int]:
    """One host map (H, W): every box sum from an integral image, the first maximum."""
    integral = np.pad(cam.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = integral[bh:, bw:] - integral[:-bh, bw:] - integral[bh:, :-bw] + integral[:-bh, :-bw]
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(y), int(x)
