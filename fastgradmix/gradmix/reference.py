"""Pure-PyTorch reference of the three GradMix operations: the specification in code.

``layercam``, ``window_argmax`` and ``paste_resized`` have twins with the same names and signatures in
``fastgradmix.kernels.*`` (Triton), which are tested against these. The reference is also the path used
on the CPU, so it follows the same rules as the kernels: fully batched (no Python loop over samples),
no host synchronisation (no ``.item()``, no data-dependent shapes or branches), any device. Like the
kernels they are not differentiable: they run under ``torch.no_grad`` (the CAM only chooses where to
paste, and the mixed image is a network input).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from fastgradmix.gradmix.checks import cam_layer_inputs, check_per_sample


def _single_layer_cam(acts: torch.Tensor, grads: torch.Tensor, variant: str, eps: float) -> torch.Tensor:
    """One layer's CAM, normalised per sample by its max: (N, C, h, w) x2 -> (N, h, w) fp32."""
    # fp32 whatever the autocast dtype: the channel sum of a 512-channel product loses too much in fp16.
    acts = acts.float()  # (N, C, h, w), any memory layout: the reductions below do not care
    grads = grads.float()  # (N, C, h, w)
    if variant == "layercam":
        weights = grads.clamp_min(0)  # (N, C, h, w): one weight per channel *and* position
    else:
        weights = grads.mean(dim=(2, 3), keepdim=True)  # (N, C, 1, 1): GradCAM's alpha_c
    cam = (weights * acts).sum(dim=1).clamp_min(0)  # (N, h, w)
    # Per-sample normalisation puts every layer's hottest position at 1, so each layer weighs the same in
    # the multi-layer sum whatever the scale of its gradients; eps keeps an all-zero map at zero, not NaN.
    peak = cam.amax(dim=(1, 2), keepdim=True)  # (N, 1, 1)
    return cam / (peak + eps)


@torch.no_grad()
def layercam(
    acts: torch.Tensor | Sequence[torch.Tensor],
    grads: torch.Tensor | Sequence[torch.Tensor],
    out_size: tuple[int, int] | None = None,
    variant: str = "layercam",
    eps: float = 1e-7,
) -> torch.Tensor:
    """LayerCAM (or GradCAM) maps from activations and their gradients, summed over CAM layers.

    ``acts``/``grads``: one tensor (N, C, h, w) or a sequence of them, one per CAM layer (layers may
    differ in C, h, w; each grad has its activation's shape); NCHW or channels_last; fp32/fp16/bf16.
    Per layer: ``ReLU(sum_c w_c * A_c)`` with ``w = ReLU(G)`` per position (``"layercam"``) or
    ``w_c = mean_hw(G_c)`` (``"gradcam"``), divided by its per-sample max + ``eps``. Each layer's map is
    then resized bilinearly (align_corners=False, no antialias) to ``out_size`` (H, W) and the layers
    are summed. ``out_size=None`` means the largest layer's (h, w) (by h*w; the first on ties).

    Returns a contiguous fp32 tensor (N, H, W).
    """
    act_layers, grad_layers, out_size = cam_layer_inputs(acts, grads, variant, out_size)

    total = None  # (N, H, W) fp32, the running sum over layers
    for a, g in zip(act_layers, grad_layers, strict=True):  # a loop over layers, never over samples
        cam = _single_layer_cam(a, g, variant, eps)  # (N, h, w)
        if tuple(cam.shape[-2:]) != out_size:
            # interpolate wants a channel dim: (N, 1, h, w) -> (N, 1, H, W) -> (N, H, W)
            cam = F.interpolate(
                cam.unsqueeze(1), size=out_size, mode="bilinear", align_corners=False, antialias=False
            ).squeeze(1)
        total = cam if total is None else total + cam
    return total.contiguous()


@torch.no_grad()
def window_argmax(
    maps: torch.Tensor, box_h: torch.Tensor, box_w: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left corner of the box with the largest map sum, per sample, with per-sample box sizes.

    ``maps`` (N, H, W) float; ``box_h``, ``box_w`` (N,) integer tensors. Precondition (not checked, as
    that would need a host read): ``1 <= box_h[i] <= H`` and ``1 <= box_w[i] <= W``; a box larger than
    the map has no valid position and yields (0, 0).

    For sample i, every box of size box_h[i] x box_w[i] fully inside the map (top-left y in
    [0, H - box_h[i]], x in [0, W - box_w[i]]) is scored by the sum of the map inside it; the best box
    wins, ties going to the smallest y, then the smallest x. Returns int64 (N,) tensors ``(y, x)``.

    Box sums come from a float64 integral image, so equal regions (e.g. all-zero ones) get exactly equal
    sums in the common case and the tie rule is honoured; near-ties closer than float64 rounding are
    not guaranteed to resolve the same way as a direct summation would.
    """
    if maps.dim() != 3:
        raise ValueError(f"window_argmax: maps must be (N, H, W), got {tuple(maps.shape)}")
    n, height, width = maps.shape
    check_per_sample("window_argmax", n, box_h=box_h, box_w=box_w)
    device = maps.device
    box_h = box_h.to(device=device, dtype=torch.long)  # (N,)
    box_w = box_w.to(device=device, dtype=torch.long)  # (N,)

    # integral[i, r, c] = sum of maps[i, :r, :c]; the zero first row/column makes every box sum
    # one formula with no edge cases.
    integral = F.pad(maps.double().cumsum(dim=1).cumsum(dim=2), (1, 0, 1, 0))  # (N, H+1, W+1)
    integral = integral.reshape(n, (height + 1) * (width + 1))  # flat, for gathering with offsets

    # Every top-left candidate, for every sample at once. Bottom/right edges are clamped so that
    # candidates outside the map still gather a valid address; they are masked out below.
    top = torch.arange(height, device=device).view(1, height, 1)  # (1, H, 1)
    left = torch.arange(width, device=device).view(1, 1, width)  # (1, 1, W)
    bottom = (top + box_h.view(n, 1, 1)).clamp_max(height)  # (N, H, 1)
    right = (left + box_w.view(n, 1, 1)).clamp_max(width)  # (N, 1, W)
    stride = width + 1

    def corner(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        index = (rows * stride + cols).expand(n, height, width).reshape(n, height * width)  # (N, H*W)
        return integral.gather(1, index)  # (N, H*W)

    box_sums = corner(bottom, right) - corner(top, right) - corner(bottom, left) + corner(top, left)
    valid = (top <= height - box_h.view(n, 1, 1)) & (left <= width - box_w.view(n, 1, 1))  # (N, H, W)
    box_sums = box_sums.masked_fill(~valid.reshape(n, height * width), float("-inf"))  # (N, H*W)

    # Row-major flattening orders candidates by y, then x, and torch.argmax returns the first maximal
    # index: together they implement the tie rule.
    best = box_sums.argmax(dim=1)  # (N,) int64, = y * W + x
    return best // width, best % width


def _source_taps(
    out_len: int, start: torch.Tensor, box_len: torch.Tensor, src_len: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear taps along one axis for every sample: where each output pixel reads the partner.

    ``start``, ``box_len`` (N,) int64. Returns ``(inside, i0, i1, lam)``, each (N, out_len): whether the
    output pixel is in the box, the two source indices and the weight of ``i1``, computed exactly as
    PyTorch's bilinear upsampling with align_corners=False does (fp32 scale = src_len / box_len).
    """
    pixel = torch.arange(out_len, device=start.device).view(1, out_len)  # (1, L)
    local = pixel - start.view(-1, 1)  # (N, L): position inside the box
    inside = (local >= 0) & (local < box_len.view(-1, 1))  # (N, L)
    # Outside the box the taps are never used; clamping keeps their indices in range all the same.
    local = torch.minimum(local.clamp_min(0), box_len.view(-1, 1) - 1)  # (N, L)
    # (N, 1) fp32 scale = float(src_len) / box_len, one IEEE division as in PyTorch's
    # area_pixel_compute_scale. (``src_len / tensor`` would not do: it multiplies by a rounded reciprocal.)
    box = box_len.float().view(-1, 1)
    scale = torch.full_like(box, src_len) / box
    # Half-pixel centres: scale * (dst + 0.5) - 0.5. PyTorch's compiled kernels (CPU and CUDA) fuse this
    # multiply-add and round once; float64 holds the product and difference exactly (a 24-bit scale times
    # a half-integer below 2^14, i.e. boxes under 8192 px), so one rounding to fp32 reproduces the fused
    # result. Rounding twice in fp32 instead moves the coordinate by an ulp, the pixel by ~1e-6 relative.
    source = ((local.double() + 0.5) * scale.double() - 0.5).float().clamp_min(0)  # (N, L)
    i0 = source.floor().long().clamp_max(src_len - 1)  # (N, L)
    i1 = (i0 + 1).clamp_max(src_len - 1)  # (N, L): the last row/column reads itself twice
    lam = (source - i0.float()).clamp(0, 1)  # (N, L) weight of i1
    return inside, i0, i1, lam


@torch.no_grad()
def paste_resized(
    images: torch.Tensor,
    partner: torch.Tensor,
    y: torch.Tensor,
    x: torch.Tensor,
    box_h: torch.Tensor,
    box_w: torch.Tensor,
) -> torch.Tensor:
    """``images`` with ``partner[i]``, resized bilinearly to box i, pasted into box i; a new tensor.

    ``images`` (N, C, H, W) and ``partner`` (N, C, Hp, Wp) float (fp32/fp16/bf16; Hp, Wp may differ
    from H, W); ``y``, ``x``, ``box_h``, ``box_w`` (N,) integer tensors. Precondition (not checked):
    box i lies inside the image, ``0 <= y[i]``, ``y[i] + box_h[i] <= H``, ``box_h[i] >= 1``, same for x/W.

    Inside box i the output equals ``F.interpolate(partner[i:i+1].float(), size=(box_h[i], box_w[i]),
    mode="bilinear", align_corners=False, antialias=False)`` cast to ``images.dtype``; outside it is
    ``images`` bit for bit. The output keeps the dtype and memory format of ``images``.
    """
    if images.dim() != 4 or partner.dim() != 4 or images.shape[:2] != partner.shape[:2]:
        raise ValueError(
            f"paste_resized: images {tuple(images.shape)} and partner {tuple(partner.shape)} must be "
            "(N, C, H, W) and (N, C, Hp, Wp) with the same N and C"
        )
    n, channels, height, width = images.shape
    check_per_sample("paste_resized", n, y=y, x=x, box_h=box_h, box_w=box_w)
    src_h, src_w = partner.shape[-2:]
    device = images.device
    y, x, box_h, box_w = (t.to(device=device, dtype=torch.long) for t in (y, x, box_h, box_w))

    inside_h, row0, row1, lam_h = _source_taps(height, y, box_h, src_h)  # each (N, H)
    inside_w, col0, col1, lam_w = _source_taps(width, x, box_w, src_w)  # each (N, W)

    # Separable gathers: partner rows first, then columns, blended in PyTorch's order
    # h0 * (w0 * p00 + w1 * p01) + h1 * (w0 * p10 + w1 * p11), all in fp32.
    source = partner.float()  # (N, C, Hp, Wp)

    def rows(index: torch.Tensor) -> torch.Tensor:  # (N, H) -> (N, C, H, Wp)
        return source.gather(2, index.view(n, 1, height, 1).expand(n, channels, height, src_w))

    def cols(plane: torch.Tensor, index: torch.Tensor) -> torch.Tensor:  # (N, C, H, Wp) -> (N, C, H, W)
        return plane.gather(3, index.view(n, 1, 1, width).expand(n, channels, height, width))

    lam_w1 = lam_w.view(n, 1, 1, width)  # (N, 1, 1, W)
    lam_w0 = 1 - lam_w1
    lam_h1 = lam_h.view(n, 1, height, 1)  # (N, 1, H, 1)
    lam_h0 = 1 - lam_h1
    upper, lower = rows(row0), rows(row1)  # (N, C, H, Wp) each
    upper = lam_w0 * cols(upper, col0) + lam_w1 * cols(upper, col1)  # (N, C, H, W)
    lower = lam_w0 * cols(lower, col0) + lam_w1 * cols(lower, col1)  # (N, C, H, W)
    resized = (lam_h0 * upper + lam_h1 * lower).to(images.dtype)  # (N, C, H, W)

    in_box = inside_h.view(n, 1, height, 1) & inside_w.view(n, 1, 1, width)  # (N, 1, H, W)
    # empty_like keeps images' strides (NCHW or channels_last); where() writes every element of it.
    mixed = torch.empty_like(images)
    torch.where(in_box, resized, images, out=mixed)
    return mixed
