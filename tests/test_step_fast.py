"""The fast training step: no host reads (fused Adam included), fused Adam's update, the fp16 overflow
counter, memory that does not grow per step, and the step timer. GPU variants run when CUDA is present."""

from __future__ import annotations

import gc
import time

import pytest
import torch
from host_reads import ForbidHostReads

from fastgradmix.models import build_model
from fastgradmix.runs.config import Config
from fastgradmix.training.step import TrainStep, build_optimizer
from fastgradmix.training.timing import StepTimer, peak_memory_mib

CPU = torch.device("cpu")
HAS_CUDA = torch.cuda.is_available()


def _config(**overrides) -> Config:
    values = dict(arch="resnet18", width=8, image_size=16, cam_layers="conv4_2", temperature=0.5,
                  gradmix_backend="auto", batch_size=6)
    values.update(overrides)
    return Config(**values)


def _make_step(device=CPU, **overrides) -> TrainStep:
    cfg = _config(**overrides)
    torch.manual_seed(0)
    model = build_model("resnet18", 3, width=8, channels_last=cfg.channels_last).to(device)
    return TrainStep(model, build_optimizer(model, 1e-3, 0.0), cfg, device)


def _batch(device=CPU, n=6):
    generator = torch.Generator().manual_seed(1)
    view1 = torch.randn(n, 3, 16, 16, generator=generator)
    view2 = torch.randn(n, 3, 16, 16, generator=generator)
    labels = torch.tensor([0, 1, 0, 2, 1, 2])[:n]
    return view1.to(device), view2.to(device), labels.to(device)


@pytest.mark.parametrize("overrides", [
    dict(aug="gradmix"),
    dict(aug="gradmix", amp=True, channels_last=True),
    dict(aug="gradmix", cam_grad="detached"),
    dict(aug="none", amp=True),
])
def test_whole_step_with_fused_adam_reads_nothing_back(overrides):
    """Forward, CAM gradient, augmentation, backward *and* the fused Adam update under the host-read guard
    (the per-parameter Adam reads its step counter back: the guard catches it, see the last test here)."""
    step = _make_step(**overrides)
    view1, view2, labels = _batch()
    before = [p.detach().clone() for p in step.model.parameters()]
    step(view1, view2, labels, torch.Generator().manual_seed(0))  # Adam's state is created here
    with ForbidHostReads():
        for _ in range(2):
            losses = step(view1, view2, labels, torch.Generator().manual_seed(0))
    assert torch.isfinite(losses["loss"])
    assert all(not torch.equal(a, p) for a, p in zip(before, step.model.parameters(), strict=True))


def test_the_guard_catches_the_per_parameter_adam():
    model = build_model("resnet18", 3, width=8)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3, foreach=False)
    step = TrainStep(model, optimizer, _config(), CPU)
    step(*_batch(), torch.Generator().manual_seed(0))
    with pytest.raises(AssertionError, match="host read"), ForbidHostReads():
        step(*_batch(), torch.Generator().manual_seed(0))


def test_build_optimizer_is_fused_adam_with_adams_update():
    """Three updates against Adam written out (Kingma & Ba, L2 weight decay added to the gradient)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3)
    optimizer = build_optimizer(model, lr=0.01, weight_decay=0.1)
    assert optimizer.defaults.get("fused") is True
    params = [p.detach().clone().double() for p in model.parameters()]
    moments = [torch.zeros_like(p) for p in params]
    squares = [torch.zeros_like(p) for p in params]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for t in range(1, 4):
        grads = [torch.randn_like(p) for p in model.parameters()]
        for p, g in zip(model.parameters(), grads, strict=True):
            p.grad = g.clone()
        optimizer.step()
        for i, g in enumerate(grads):
            g = g.double() + 0.1 * params[i]
            moments[i] = beta1 * moments[i] + (1 - beta1) * g
            squares[i] = beta2 * squares[i] + (1 - beta2) * g * g
            m_hat = moments[i] / (1 - beta1**t)
            v_hat = squares[i] / (1 - beta2**t)
            params[i] = params[i] - 0.01 * m_hat / (v_hat.sqrt() + eps)
    for p, expected in zip(model.parameters(), params, strict=True):
        assert torch.allclose(p.detach().double(), expected, atol=1e-6)


def test_overflow_skipped_steps_are_counted_on_the_device():
    """fp16 + GradScaler: steps whose gradients hold inf are skipped by the scaler; the step counts exactly
    those (here injected at steps 1 and 4), and the count restarts after each read."""
    step = _make_step(aug="gradmix")
    step.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)  # CPU stands in for CUDA's fp16 scaler
    poison = {"on": False}
    first = next(step.model.parameters())
    first.register_hook(lambda grad: grad * float("inf") if poison["on"] else grad)
    view1, view2, labels = _batch()
    changed = []
    for index in range(6):
        poison["on"] = index in (1, 4)
        before = first.detach().clone()
        step(view1, view2, labels, torch.Generator().manual_seed(index))
        changed.append(not torch.equal(before, first.detach()))
    assert changed == [True, False, True, True, False, True]  # the scaler really skipped those two
    assert step.read_log_fields()["overflow_skipped_steps"] == 2
    step(view1, view2, labels, torch.Generator().manual_seed(9))
    assert step.read_log_fields()["overflow_skipped_steps"] == 0
    assert "overflow_skipped_steps" not in _make_step().read_log_fields()  # not reported without fp16


def _live_tensors() -> tuple[int, int]:
    """(number of Python tensor objects alive, bytes of their distinct storages)."""
    gc.collect()
    tensors = [obj for obj in gc.get_objects() if issubclass(type(obj), torch.Tensor)]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for t in tensors if t.device.type != "meta"}
    return len(tensors), sum(storages.values())


@pytest.mark.parametrize("overrides", [dict(aug="gradmix"), dict(aug="gradmix", cam_grad="detached"),
                                       dict(aug="none")])
def test_nothing_accumulates_from_step_to_step(overrides):
    """The loop of train.py in small: steps, losses pending until a log step, one read-back. After a warm-up
    window (Adam's state, the scaler), the live tensors are the same at every log step."""
    step = _make_step(**overrides)
    view1, view2, labels = _batch()
    log_every, snapshots = 3, []
    for window in range(5):
        pending = [step(view1, view2, labels, torch.Generator().manual_seed(window * 10 + i))
                   for i in range(log_every)]
        torch.stack([losses["loss"] for losses in pending]).tolist()
        step.read_log_fields()
        del pending
        if window >= 1:
            snapshots.append(_live_tensors())
    assert len(set(snapshots)) == 1, snapshots


def test_step_timer_measures_sections_on_the_cpu():
    timer = StepTimer(CPU)
    for _ in range(3):
        timer.start("step")
        time.sleep(0.01)
        with timer.section("augment"):
            time.sleep(0.01)
        timer.stop("step")
    totals, counts = timer.read()
    assert counts == {"augment": 3, "step": 3}
    assert totals["augment"] >= 30 and totals["step"] >= 60 and totals["augment"] < totals["step"]
    assert timer.read() == ({}, {})  # a read starts a new window


def test_read_log_fields_report_the_augmentation_share():
    view1, view2, labels = _batch()
    for aug in ("gradmix", "none"):
        step = _make_step(aug=aug)
        for seed in range(2):
            step(view1, view2, labels, torch.Generator().manual_seed(seed))
        fields = step.read_log_fields()
        assert fields["step_ms"] > 0 and fields["peak_memory_mib"] > 0
        if aug == "none":
            assert fields["augment_share"] == 0.0 and fields["cam_grad_share"] == 0.0
        else:
            assert 0.0 < fields["augment_share"] < 1.0 and 0.0 < fields["cam_grad_share"] < 1.0
    assert peak_memory_mib(CPU) > 1.0  # a Python process with torch loaded holds far more than 1 MiB


# ---------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("overrides", [
    dict(aug="gradmix", amp=True, channels_last=True),
    dict(aug="gradmix", amp=True, amp_dtype="fp16", channels_last=True),
    dict(aug="gradmix", cam_grad="detached", amp=True),
    dict(aug="none", amp=True, channels_last=True),
])
def test_cuda_step_never_synchronises(overrides):
    """Whole steps (kernels, fused Adam, GradScaler, timing events) under CUDA's sync debug mode, which raises
    on any synchronising call (item(), a device-to-host copy, a blocking host-to-device copy...)."""
    device = torch.device("cuda")
    step = _make_step(device, **overrides)
    view1, view2, labels = _batch(device)
    generator = torch.Generator(device=device).manual_seed(0)
    step(view1, view2, labels, generator)  # warm-up: Adam's state, the scaler's scale, kernel compiles
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            losses = step(view1, view2, labels, generator)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(losses["loss"])
    fields = step.read_log_fields()  # the log step's read-back (allowed to sync)
    assert fields["step_ms"] > 0 and fields["peak_memory_mib"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_cuda_memory_does_not_grow_per_step():
    device = torch.device("cuda")
    step = _make_step(device, aug="gradmix", amp=True, channels_last=True)
    view1, view2, labels = _batch(device)
    generator = torch.Generator(device=device).manual_seed(0)
    allocated = []
    for window in range(5):
        pending = [step(view1, view2, labels, generator) for _ in range(3)]
        torch.stack([losses["loss"] for losses in pending]).tolist()
        step.read_log_fields()
        del pending
        if window >= 1:
            allocated.append(torch.cuda.memory_allocated(device))
    assert len(set(allocated)) == 1, allocated


def test_a_nan_feature_makes_the_loss_nan():
    """What the run's non-finite check relies on: NaN features (a diverged model) must not pass for rows
    with nothing to contrast, which the loss sets to 0."""
    from fastgradmix.training.objectives.losses import gradmix_objective

    z1, z2 = torch.nn.functional.normalize(torch.randn(2, 4, 8), dim=2)
    z1[1] = float("nan")
    terms = gradmix_objective(z1, z2, torch.tensor([0, 1, 0, 1]), z_mix=z2.clone())
    assert all(torch.isnan(value) for value in terms.values())
