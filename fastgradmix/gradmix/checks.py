"""Argument checks shared by the GradMix operations' two implementations (reference.py and the Triton
kernels in fastgradmix/kernels/): one place, so the twins accept and reject exactly the same inputs with the same
messages. Shape-only: nothing here reads a tensor's values (no host sync)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

CAM_VARIANTS = ("layercam", "gradcam")


def check_per_sample(op: str, batch: int, **per_sample: torch.Tensor) -> None:
    """Every per-sample argument is an (N,) tensor."""
    for name, tensor in per_sample.items():
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != (batch,):
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(f"{op}: {name} must be a tensor of shape ({batch},), got {shape}")


def _as_layer_list(tensors: torch.Tensor | Sequence[torch.Tensor], what: str) -> list[torch.Tensor]:
    if isinstance(tensors, torch.Tensor):
        return [tensors]
    if isinstance(tensors, Sequence) and all(isinstance(t, torch.Tensor) for t in tensors):
        return list(tensors)
    raise ValueError(f"layercam: {what} must be a Tensor (N, C, h, w) or a sequence of such tensors")


def cam_layer_inputs(
    acts: torch.Tensor | Sequence[torch.Tensor],
    grads: torch.Tensor | Sequence[torch.Tensor],
    variant: str,
    out_size: tuple[int, int] | None,
) -> tuple[list[torch.Tensor], list[torch.Tensor], tuple[int, int]]:
    """layercam's inputs checked: (activation layers, gradient layers, (H, W) of the output).

    Each layer (N, C, h, w) with its gradient of the same shape, one batch size for all; ``out_size=None``
    means the largest layer's (h, w) (by h*w; the first on ties)."""
    if variant not in CAM_VARIANTS:
        raise ValueError(f"layercam: unknown variant {variant!r}; choose one of {CAM_VARIANTS}")
    act_layers = _as_layer_list(acts, "acts")
    grad_layers = _as_layer_list(grads, "grads")
    if not act_layers:
        raise ValueError("layercam: got an empty list of CAM layers; pass at least one (acts, grads) pair")
    if len(act_layers) != len(grad_layers):
        raise ValueError(
            f"layercam: {len(act_layers)} activation tensors but {len(grad_layers)} gradient tensors; "
            "pass one gradient per activation"
        )
    batch = act_layers[0].shape[0]
    for index, (a, g) in enumerate(zip(act_layers, grad_layers, strict=True)):
        if a.dim() != 4 or a.shape != g.shape:
            raise ValueError(
                f"layercam: layer {index}: activations {tuple(a.shape)} and gradients {tuple(g.shape)} "
                "must both be (N, C, h, w) with the same shape"
            )
        if a.shape[0] != batch:
            raise ValueError(f"layercam: layer {index} has batch {a.shape[0]}, layer 0 has {batch}")
    if out_size is None:
        # max() keeps the first of equal keys, which is the documented tie rule
        out_size = max((tuple(a.shape[-2:]) for a in act_layers), key=lambda hw: hw[0] * hw[1])
    return act_layers, grad_layers, (int(out_size[0]), int(out_size[1]))
