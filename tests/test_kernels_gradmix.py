"""The kernels inside the augmentation: same results as the reference ops, a fixed number of launches, no
host read, the dispatch, and (on a GPU) capture of the whole augmentation in a CUDA graph."""

from __future__ import annotations

import pytest
import torch
from host_reads import ForbidHostReads
from test_kernels_window_argmax import _check_against_all_box_sums

from fastgradmix.common.errors import UserError
from fastgradmix.gradmix import reference
from fastgradmix.gradmix.augment import gradmix_view
from fastgradmix.gradmix.ops import resolve_ops
from fastgradmix.kernels import layercam as layercam_module
from fastgradmix.kernels import paste as paste_module
from fastgradmix.kernels import window_argmax as window_module


def _assert_best_boxes(maps, box_h, box_w, top, left):
    """top/left hold a best box of every map (exactly where fp32 rounding cannot reorder the boxes)."""
    _check_against_all_box_sums(maps.cpu(), box_h.cpu(), box_w.cpu(), top.cpu(), left.cpu())


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
GAMMA = (0.1, 0.5)


def _inputs(device, seed, batch=6, size=16):
    """A first view (channels_last) and two CAM layers of activations/gradients, as the step captures them."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=gen).contiguous(memory_format=torch.channels_last)
    acts = [torch.rand(batch, 16, size // 4, size // 4, generator=gen),
            torch.rand(batch, 8, size // 2, size // 2, generator=gen)]
    grads = [torch.randn(a.shape, generator=gen) for a in acts]
    return images.to(device), [a.to(device) for a in acts], [g.to(device) for g in grads]


@pytest.mark.parametrize("variant", ["layercam", "gradcam"])
def test_gradmix_view_with_kernels_equals_reference_ops(variant, kernel_device, poison_kernel_outputs):
    images, acts, grads = _inputs(kernel_device, 7000)
    kernels = resolve_ops("triton", kernel_device)
    views = {}
    for name, ops in [("kernels", kernels), ("reference", resolve_ops("reference", kernel_device))]:
        generator = torch.Generator(device=kernel_device).manual_seed(3)  # the same boxes and partners
        views[name] = gradmix_view(images, acts, grads, variant, GAMMA, generator, ops)
    ours, ref = views["kernels"], views["reference"]

    for field in ("box_h", "box_w", "partner", "weights"):
        assert torch.equal(getattr(ours, field), getattr(ref, field)), field
    torch.testing.assert_close(ours.maps, ref.maps, atol=1e-5, rtol=1e-5)
    _assert_best_boxes(ours.maps, ours.box_h, ours.box_w, ours.top, ours.left)
    assert ours.images.stride() == images.stride()
    expected = reference.paste_resized(images, images[ours.partner], ours.top, ours.left, ours.box_h, ours.box_w)
    torch.testing.assert_close(ours.images, expected, atol=1e-6, rtol=1e-6)


def test_kernel_ops_read_nothing_back_to_the_host(kernel_device):
    images, acts, grads = _inputs(kernel_device, 7100)
    generator = torch.Generator(device=kernel_device).manual_seed(0)
    with ForbidHostReads():  # fails on .item(), bool(tensor), boolean masks, nonzero...
        gradmix_view(images, acts, grads, "layercam", GAMMA, generator, resolve_ops("triton", kernel_device))


class _CountingKernel:
    """Stands in for a Triton kernel and counts its launches (``kernel[grid](...)``)."""

    def __init__(self, kernel, counts: dict, name: str):
        self.kernel, self.counts, self.name = kernel, counts, name

    def __getitem__(self, grid):
        self.counts[self.name] = self.counts.get(self.name, 0) + 1
        return self.kernel[grid]


@pytest.mark.parametrize(("variant", "layers", "expected"), [
    ("layercam", 1, {"_layer_cam": 1, "_aggregate": 1}),
    ("layercam", 3, {"_layer_cam": 3, "_aggregate": 1}),
    ("layercam", 6, {"_layer_cam": 6, "_aggregate": 2}),  # four layers per aggregation launch
    ("gradcam", 2, {"_channel_mean": 2, "_layer_cam": 2, "_aggregate": 1}),
])
def test_launch_counts_depend_on_shapes_only(variant, layers, expected, kernel_device, monkeypatch):
    counts = {}
    for module, names in [(layercam_module, ["_channel_mean", "_layer_cam", "_aggregate"]),
                          (window_module, ["_row_window_sums", "_box_argmax"]),
                          (paste_module, ["_paste_kernel"])]:
        for name in names:
            monkeypatch.setattr(module, name, _CountingKernel(getattr(module, name), counts, name))
    gen = torch.Generator().manual_seed(7200 + layers)
    acts = [torch.rand(3, 4, 2 + k, 3, generator=gen).to(kernel_device) for k in range(layers)]
    grads = [torch.randn(a.shape, generator=gen).to(kernel_device) for a in acts]
    images = torch.randn(3, 3, 9, 9, generator=gen).to(kernel_device)
    generator = torch.Generator(device=kernel_device).manual_seed(0)
    gradmix_view(images, acts, grads, variant, GAMMA, generator, resolve_ops("triton", kernel_device))
    assert counts == {**expected, "_row_window_sums": 1, "_box_argmax": 1, "_paste_kernel": 1}


def test_triton_backend_off_cuda_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(UserError, match="needs a CUDA device"):
        resolve_ops("triton", torch.device("cpu"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_ops("triton", torch.device("cpu")).layercam is layercam_module.layercam


@pytest.mark.gpu
@needs_cuda
def test_auto_backend_uses_the_kernels_on_cuda():
    ops = resolve_ops("auto", torch.device("cuda"))
    assert ops.layercam is layercam_module.layercam
    assert ops.window_argmax is window_module.window_argmax
    assert ops.paste_resized is paste_module.paste_resized


def _warm_up(fn, runs=2):
    """Runs fn on a side stream first (compiles the kernels, fills the allocator), as torch.cuda.graph wants."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(runs):
            fn()
    torch.cuda.current_stream().wait_stream(side)


@pytest.mark.gpu
@needs_cuda
def test_kernel_ops_replay_from_a_cuda_graph():
    device = torch.device("cuda")
    images, acts, grads = _inputs(device, 7300, batch=64, size=32)
    box_h = torch.randint(1, 17, (64,), device=device)
    box_w = torch.randint(1, 17, (64,), device=device)
    partner = images.roll(1, dims=0)
    ops = resolve_ops("auto", device)

    def augment():
        maps = ops.layercam(acts, grads, out_size=(32, 32))
        top, left = ops.window_argmax(maps, box_h, box_w)
        return maps, top, left, ops.paste_resized(images, partner, top, left, box_h, box_w)

    _warm_up(augment)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = augment()
    for seed in (1, 2):  # new inputs in the captured buffers, then replay
        fresh_images, fresh_acts, fresh_grads = _inputs(device, 7300 + seed, batch=64, size=32)
        for static, fresh in zip([images, *acts, *grads], [fresh_images, *fresh_acts, *fresh_grads], strict=True):
            static.copy_(fresh)
        partner.copy_(images.roll(1, dims=0))
        graph.replay()
        maps, top, left, mixed = captured
        expected_maps = reference.layercam(acts, grads, out_size=(32, 32))
        torch.testing.assert_close(maps, expected_maps, atol=1e-5, rtol=1e-5)
        _assert_best_boxes(maps, box_h, box_w, top, left)
        expected = reference.paste_resized(images, partner, top, left, box_h, box_w)
        torch.testing.assert_close(mixed, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.gpu
@needs_cuda
def test_whole_augmentation_replays_from_a_cuda_graph():
    """gradmix_view with its random boxes and partners (the default CUDA generator, which graphs
    advance on every replay) captured once and replayed."""
    device = torch.device("cuda")
    images, acts, grads = _inputs(device, 7400, batch=64, size=32)
    ops = resolve_ops("auto", device)
    torch.cuda.manual_seed(0)

    def augment():
        return gradmix_view(images, acts, grads, "layercam", GAMMA, None, ops)

    _warm_up(augment)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        view = augment()
    draws = []
    for _ in range(2):
        graph.replay()
        torch.testing.assert_close(view.maps, reference.layercam(acts, grads, out_size=(32, 32)),
                                   atol=1e-5, rtol=1e-5)
        _assert_best_boxes(view.maps, view.box_h, view.box_w, view.top, view.left)
        assert not (view.partner == torch.arange(64, device=device)).any()
        expected = reference.paste_resized(images, images[view.partner], view.top, view.left,
                                           view.box_h, view.box_w)
        torch.testing.assert_close(view.images, expected, atol=1e-6, rtol=1e-6)
        draws.append(view.box_h.clone())
    assert not torch.equal(draws[0], draws[1])  # each replay draws new boxes
