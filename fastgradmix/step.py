"""One training step: clean views -> contrastive loss -> (CAM -> mixed view -> l_mix) -> one update.

DESIGN.md section 2, steps 1-9. With ``cam_grad="exact"`` the CAM gradient G = dL_con/dA comes from
``torch.autograd.grad(..., retain_graph=True)``, which back-propagates only from the loss down to
the CAM layers, and the step ends with one backward of L_con + lambda * mean(w * l_mix). With
``cam_grad="detached"`` G is recorded during the full backward of L_con and l_mix sees the clean
features detached (a second, smaller backward); cheaper, not the exact objective.

Speed: the step never waits for the device. Loss values, the fp16 overflow counter and the timing
events stay on the device; the training loop reads them back only every ``--log-every`` steps
(``read_log_fields``). Under ``--amp`` it runs bf16 autocast (fp16 + GradScaler with ``--amp-dtype
fp16``, CUDA only); the optimizer should be fused (``build_optimizer``), whose update reads nothing
back to the host, unlike the per-parameter Adam that reads its step counter.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from .gradmix import MIX_VARIANTS, CamCapture, gradmix_view, resolve_ops
from .losses import gradmix_objective, mix_loss_per_sample
from .timing import StepTimer, peak_memory_mib


def build_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam with the fused implementation (one kernel for all parameters, CPU and CUDA, torch >= 2.4),
    falling back to the multi-tensor one where fused is not supported for the parameters' device."""
    params = list(model.parameters())
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)


class TrainStep:
    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, cfg, device: torch.device):
        self.model = model
        self.optimizer = optimizer
        self.cfg = cfg
        self.device = device
        self.variant = MIX_VARIANTS.get(cfg.aug)  # None when no mixed view is made
        self.exact_cam_grad = cfg.cam_grad == "exact"
        self.capture = None
        if self.variant is not None:
            self.capture = CamCapture(model, cfg.cam_layer_list(), keep_grads=not self.exact_cam_grad)
        self.ops = resolve_ops(cfg.gradmix_backend, device)
        self.negatives_only = cfg.denominator == "negatives"
        self.amp_dtype = None
        if cfg.amp:
            self.amp_dtype = torch.float16 if (cfg.amp_dtype == "fp16" and device.type == "cuda") else torch.bfloat16
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.timer = StepTimer(device)
        # fp16 steps the scaler skipped because of inf/NaN gradients, since the last read (device scalar)
        self.skipped_steps = torch.zeros((), dtype=torch.int64, device=device)
        self._scale_before_step = None  # (1,) fp32 buffer, made on the first scaled step

    @property
    def cam_modules(self) -> list[nn.Module]:
        """The modules whose outputs the CAM hooks capture (none without a mixed view)."""
        if self.capture is None:
            return []
        return [self.model.cam_module(name) for name in self.capture.layer_names]

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.contiguous(memory_format=self.memory_format))

    def __call__(self, view1: torch.Tensor, view2: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator) -> dict[str, torch.Tensor]:
        """view1, view2 (N, C, H, W) float; labels (N,) int64. Returns detached scalar losses (on the device).

        Batches may come from the host (pinned memory): the copies are asynchronous.
        """
        view1, view2, labels = (t.to(self.device, non_blocking=True) for t in (view1, view2, labels))
        self.timer.start("step")
        losses = self._step(view1, view2, labels, generator)
        self.timer.stop("step")
        return losses

    def _step(self, view1: torch.Tensor, view2: torch.Tensor, labels: torch.Tensor,
              generator: torch.Generator) -> dict[str, torch.Tensor]:
        cfg, n = self.cfg, view1.shape[0]
        self.optimizer.zero_grad(set_to_none=True)

        # 1. clean views: one forward of both, capturing the CAM layers
        if self.capture is not None:
            self.capture.arm()
        with self.autocast():
            features = self._encode(torch.cat([view1, view2]))  # (2N, D) fp32, L2-normalised
        if self.capture is not None:
            self.capture.disarm()
        z1, z2 = features[:n], features[n:]
        terms = gradmix_objective(z1, z2, labels, theta=cfg.theta, lam=cfg.lam,
                                  temperature=cfg.temperature, negatives_only=self.negatives_only)
        clean_loss = terms["loss"]
        if self.variant is None:
            self.scaler.scale(clean_loss).backward()
            return self._finish(terms)

        # 2. G = dL_con/dA at the CAM layers (only the first view's half is used)
        activations = self.capture.activations
        with self.timer.section("cam_grad"):
            if self.exact_cam_grad:
                gradients = torch.autograd.grad(self.scaler.scale(clean_loss), activations, retain_graph=True)
            else:
                self.scaler.scale(clean_loss).backward()
                gradients = self.capture.gradients
        cam_acts = [a[:n].detach() for a in activations]  # each (N, C_l, h_l, w_l)
        cam_grads = [g[:n].detach() for g in gradients]

        # 3-8. CAM, boxes, window search, partner, paste, weights
        with self.timer.section("augment"):
            mixed = gradmix_view(view1, cam_acts, cam_grads, self.variant, (cfg.gamma_min, cfg.gamma_max),
                                 generator, self.ops)

        # 9. the mixed view's loss: anchor z_mix_i, positive z2_i, negatives the other clean images
        with self.autocast():
            z_mix = self._encode(mixed.images)  # (N, D)
        if self.exact_cam_grad:
            mix = (mixed.weights * mix_loss_per_sample(z_mix, z1, z2, cfg.temperature, self.negatives_only)).mean()
            self.scaler.scale(clean_loss + cfg.lam * mix).backward()
        else:
            mix = (mixed.weights * mix_loss_per_sample(z_mix, z1.detach(), z2.detach(), cfg.temperature,
                                                       self.negatives_only)).mean()
            self.scaler.scale(cfg.lam * mix).backward()
        terms["mix"] = mix
        terms["loss"] = clean_loss + cfg.lam * mix
        return self._finish(terms)

    def _finish(self, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.scaler.is_enabled():
            # The scaler halves its scale exactly when it skips a step for inf/NaN gradients (and only
            # grows it after a run of good steps), so comparing the scale before and after counts the
            # skipped steps on the device. GradScaler keeps the scale in the private ``_scale`` tensor,
            # updated in place; its public get_scale() would read it back to the host every step.
            scale = self.scaler._scale
            if self._scale_before_step is None:
                self._scale_before_step = torch.empty_like(scale)
            self._scale_before_step.copy_(scale)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.skipped_steps += (self.scaler._scale < self._scale_before_step).sum()
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        return {name: value.detach() for name, value in terms.items()}

    def read_log_fields(self) -> dict[str, float | int | None]:
        """Timing, memory and overflow figures since the last call, for metrics.jsonl (a host sync).

        step_ms: mean wall time of a step; augment_share: share of it in the GradMix augmentation
        (CAM maps, window search, partners, paste); cam_grad_share: in computing the CAM gradient;
        peak_memory_mib: see ``timing.peak_memory_mib``; overflow_skipped_steps (fp16 only).
        """
        totals, counts = self.timer.read()
        step_total = totals.get("step", 0.0)
        fields: dict[str, float | int | None] = {
            "step_ms": step_total / max(counts.get("step", 0), 1),
            "augment_share": totals.get("augment", 0.0) / step_total if step_total > 0 else 0.0,
            "cam_grad_share": totals.get("cam_grad", 0.0) / step_total if step_total > 0 else 0.0,
            "peak_memory_mib": peak_memory_mib(self.device),
        }
        if self.scaler.is_enabled():
            fields["overflow_skipped_steps"] = int(self.skipped_steps)
            self.skipped_steps.zero_()
        return fields
