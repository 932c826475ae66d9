"""``GradMix``: the GradMix augmentation as a drop-in for anyone's training loop (README, "Drop-in").

The user keeps their model, data, loss and optimizer; GradMix needs two calls in their step::

    mixer = fastgradmix.GradMix(model, layers=["layer4.1"], gamma=(0.1, 0.5))
    with mixer.capture():                   # the clean forward: the named layers' outputs A are kept
        z = model(torch.cat([x1, x2]))
    loss = my_loss(z)
    mixed = mixer.mix(x1, loss)             # G = dL/dA by autograd.grad, then DESIGN.md steps 3-8
    loss = loss + lam * my_mix_loss(model(mixed.images), ..., mixed.weights)

``mix`` is the same computation as the trainer's ``--aug gradmix --cam-grad exact`` step
(training/mixed_views/cam_guided.py): ``torch.autograd.grad(loss, A, retain_graph=True)`` back-propagates
only down to the captured layers and fills no parameter's ``.grad`` (so it starts no DDP all-reduce).
With ``cam_grad="detached"`` (the trainer's ``--cam-grad detached``) the user's own ``loss.backward()``
records G on its way instead and ``mix(x1)`` takes no loss. Either way ``mix`` then has
``augment.gradmix_view`` make the view, with the Triton kernels for CUDA tensors and the batched PyTorch
reference elsewhere (ops.py). Nothing is read back to the host, so a GPU step keeps running ahead.

Layers are module names of any ``nn.Module`` (``model.get_submodule``: "layer4.1", "features.7"), any
number of them (their CAMs are summed at input resolution); this project's models also accept their CAM
names ("conv5_2"). Keyword options beyond the ones named here go to ``gradmix_view`` unchanged, so every
variant it offers is reachable from here.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from fastgradmix.gradmix.augment import PAPER_RECIPE, CamBoxes, MixedView, cam_boxes, gradmix_view, paste_boxes
from fastgradmix.gradmix.capture import CamCapture
from fastgradmix.gradmix.ops import resolve_ops

__all__ = ["CamBoxes", "GradMix", "MixedView"]

CAM_WEIGHTINGS = ("layercam", "gradcam")  # LayerCAM (GradMix) or GradCAM (the "gradcam-mix" ablation)
BACKENDS = ("auto", "triton", "reference")  # ops.resolve_ops's choices
CAM_GRADIENTS = ("exact", "detached")  # autograd.grad of the loss in mix, or recorded by the user's backward

# gradmix_view's own arguments, which GradMix fills itself; any other keyword of it is a variant option
_FILLED_BY_GRADMIX = ("images", "activations", "gradients", "variant", "gamma_range", "generator", "ops")
VIEW_OPTIONS = frozenset(inspect.signature(gradmix_view).parameters) - frozenset(_FILLED_BY_GRADMIX)


def _layer_finder(model: nn.Module):
    def find_layer(name: str) -> nn.Module:
        try:
            return model.get_submodule(name)
        except AttributeError:
            pass
        if hasattr(model, "cam_module"):  # this project's models: CAM names such as conv5_2
            try:
                return model.cam_module(name)
            except ValueError:
                pass
        children = ", ".join(name for name, _ in model.named_children())
        raise ValueError(f"GradMix: {name!r} is not a module of {type(model).__name__} (its children: {children}; "
                         "name a layer as model.get_submodule does, e.g. 'layer4.1')")
    return find_layer


class GradMix:
    """GradMix on ``model``'s named layers; see the module docstring for the two calls of a step.

    gamma: the box side as a fraction of the image side, drawn per image uniformly in (min, max).
    cam: "layercam" (GradMix) or "gradcam". cam_grad: "exact" (``mix`` differentiates the loss) or
    "detached" (the user's ``loss.backward()`` before ``mix`` records G). backend: "auto" (the Triton
    kernels for CUDA tensors, the reference otherwise), "triton" or "reference". modules: the hooked
    modules, in the order of ``layers``. seed: the draws (box sides, partners) come from one
    generator per device seeded with it (None: a random seed); ``mix(generator=...)`` overrides it.
    view_options: further keyword options of ``gradmix_view`` (its variants), passed through unchanged.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], gamma: tuple[float, float] = (0.1, 0.5),
                 cam: str = "layercam", cam_grad: str = "exact", backend: str = "auto", seed: int | None = None,
                 **view_options):
        if isinstance(layers, str) or len(layers) == 0:
            raise ValueError(f"GradMix: layers must be a non-empty list of module names, not {layers!r}")
        gamma_min, gamma_max = gamma
        if not 0.0 < gamma_min <= gamma_max <= 1.0:
            raise ValueError(f"GradMix: gamma must satisfy 0 < min <= max <= 1, not {gamma!r}")
        if cam not in CAM_WEIGHTINGS:
            raise ValueError(f"GradMix: cam must be one of {CAM_WEIGHTINGS}, not {cam!r}")
        unknown = sorted(set(view_options) - VIEW_OPTIONS)
        if unknown:
            raise ValueError(f"GradMix: unknown option(s) {unknown}; gradmix_view accepts {sorted(VIEW_OPTIONS)}")
        if cam_grad not in CAM_GRADIENTS:
            raise ValueError(f"GradMix: cam_grad must be one of {CAM_GRADIENTS}, not {cam_grad!r}")
        if backend not in BACKENDS:  # fails here, not in the first step (the device is known only then)
            raise ValueError(f"GradMix: backend must be one of {BACKENDS}, not {backend!r}")
        self.layers = list(layers)
        self.gamma = (float(gamma_min), float(gamma_max))
        self.cam = cam
        self.cam_grad = cam_grad
        self.backend = backend
        self.seed = seed
        self.view_options = view_options
        self._normalised_over_batch = getattr(view_options.get("recipe"), "cam_norm", "image") == "batch"
        find_layer = _layer_finder(model)
        self.modules = [find_layer(name) for name in self.layers]  # the hooked modules (e.g. compile boundaries)
        self._capture = CamCapture(model, self.layers, keep_grads=cam_grad == "detached",
                                   find_layer=dict(zip(self.layers, self.modules, strict=True)).__getitem__)
        self._generators: dict[torch.device, torch.Generator] = {}
        self._ops = {}

    @contextmanager
    def capture(self) -> Iterator[None]:
        """Keep the layers' outputs of the forward run inside the block (the clean views' forward; of several
        forwards in the block, the last)."""
        self._capture.arm()
        try:
            yield
        finally:
            self._capture.disarm()

    def mix(self, images: torch.Tensor, loss: torch.Tensor | None = None,
            generator: torch.Generator | None = None) -> MixedView:
        """The GradMix view of ``images`` (N, C, H, W), the first N images of the captured forward.

        ``loss`` (cam_grad "exact") is the scalar whose CAM places the boxes (the clean loss; under fp16
        loss scaling pass the scaled loss, the CAM is normalised per image). Its graph is kept
        (``retain_graph``) for the user's backward. Under cam_grad "detached" pass no loss: the user's
        ``loss.backward()`` ran after the captured forward and recorded the gradients.

        Returns a ``MixedView``: ``images`` (N, C, H, W) mixed, ``weights`` (N,) fp32 box area fractions,
        boxes ``top``, ``left``, ``box_h``, ``box_w`` (N,) int64, ``partner`` (N,) int64 (the image pasted
        into box i), ``maps`` (N, H, W) the CAM at input resolution.
        """
        n = images.shape[0]
        activations = self._checked_activations(n)
        cam_acts, cam_grads = self._cam_tensors(activations, self._gradients(activations, loss), n)
        return gradmix_view(images.detach(), cam_acts, cam_grads, self.cam, self.gamma,
                            self._generator_for(images, generator), self._ops_for(images.device), **self.view_options)

    def find_boxes(self, images: torch.Tensor, generator: torch.Generator | None = None) -> CamBoxes:
        """Steps 3-5 only (CAM, box sides, positions, weights) from the captured forward and the gradient the
        last backward recorded at the layers (cam_grad "detached"): where ``mix`` would paste, without
        pasting. ``images`` (N, C, H, W) gives the shape and device. The trainer's ``--cam-schedule epoch``
        keeps these boxes for the images' next epoch and pastes them there with ``paste``."""
        activations = self._checked_activations(images.shape[0])
        cam_acts, cam_grads = self._cam_tensors(activations, self._gradients(activations, None), images.shape[0])
        return cam_boxes(images.detach(), cam_acts, cam_grads, self.cam, self.gamma,
                         self._generator_for(images, generator), self._ops_for(images.device), self._recipe)

    def paste(self, images: torch.Tensor, boxes: CamBoxes, generator: torch.Generator | None = None) -> MixedView:
        """Steps 6-8 into given boxes (``find_boxes``'s, possibly from an earlier step): partners (or noise)
        drawn from the generator, pasted; a box with a 0 side leaves its image as it is."""
        return paste_boxes(images.detach(), boxes, self._generator_for(images, generator),
                           self._ops_for(images.device), self._recipe)

    def _checked_activations(self, n: int) -> list[torch.Tensor]:
        activations = self._capture.activations  # per layer (B, C_l, h_l, w_l)
        if not activations or any(a is None for a in activations):
            raise RuntimeError("GradMix.mix: no captured forward; run the model on these images inside "
                               "`with mixer.capture():` first (and every named layer must run in it)")
        if not all(a.requires_grad for a in activations):
            raise RuntimeError("GradMix.mix: the captured forward has no gradient (torch.no_grad, or every "
                               "parameter before the layers frozen); GradMix needs dL/dA at the layers")
        if any(a.shape[0] < n for a in activations):
            raise ValueError(f"GradMix.mix: {n} images but the captured forward held {activations[0].shape[0]}")
        return activations

    def _cam_tensors(self, activations: list[torch.Tensor], gradients: list[torch.Tensor],
                     n: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The detached rows the CAM reads: the images' first N, or every captured row when the CAM is
        normalised over the whole batch (the published code's --cam-norm batch spans both views); the
        captures are spent (freed now, not at the next forward)."""
        rows = slice(None) if self._normalised_over_batch else slice(0, n)
        cam_acts = [a[rows].detach() for a in activations]  # each (N or B, C_l, h_l, w_l)
        cam_grads = [g[rows].detach() for g in gradients]
        self._capture.activations, self._capture.gradients = [], []
        return cam_acts, cam_grads

    def _gradients(self, activations: list[torch.Tensor], loss: torch.Tensor | None) -> list[torch.Tensor]:
        if self.cam_grad == "exact":
            if loss is None:
                raise ValueError("GradMix.mix: pass the loss whose CAM places the boxes (cam_grad='exact')")
            return list(torch.autograd.grad(loss, activations, retain_graph=True))  # dL/dA only: no .grad filled
        if loss is not None:
            raise ValueError("GradMix.mix: cam_grad='detached' takes the gradients your loss.backward() recorded; "
                             "call it before mix and pass no loss")
        if any(g is None for g in self._capture.gradients):
            raise RuntimeError("GradMix.mix: no gradient was recorded at the layers; with cam_grad='detached' run "
                               "loss.backward() after the captured forward, before mix")
        return self._capture.gradients

    def remove(self) -> None:
        """Take the hooks off the model (GradMix is unusable after)."""
        self._capture.remove()

    @property
    def _recipe(self):
        return self.view_options.get("recipe", PAPER_RECIPE)

    def _generator_for(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Generator:
        """The caller's generator, or this mixer's own for the images' device."""
        return self._generator(images.device) if generator is None else generator

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            generator = torch.Generator(device=device)
            if self.seed is None:
                generator.seed()
            else:
                generator.manual_seed(self.seed)
            self._generators[device] = generator
        return self._generators[device]

    def _ops_for(self, device: torch.device):
        if device not in self._ops:
            self._ops[device] = resolve_ops(self.backend, device)
        return self._ops[device]
