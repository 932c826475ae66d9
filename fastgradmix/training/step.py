"""One training step: clean views -> contrastive loss -> (CAM -> mixed view -> l_mix) -> one update.

DESIGN.md section 2, steps 1-9, for every ``--method`` and ``--aug``:

- methods (the clean loss L_con): ``supcon+simclr`` theta L_supcon + lambda L_simclr; ``supcon`` theta
  L_supcon; ``simclr`` lambda L_simclr; ``moco`` lambda L_moco (MoCo v2: queries f_q(v1), keys f_k(v2) from
  the momentum key encoder, negatives a queue of earlier keys; see moco.py).
- augmentations (the mixed view m, made from v1, enters as lambda * mean(w_i l_mix(i))): ``gradmix`` and
  ``gradcam-mix`` paste a resized partner where the CAM of L_con is highest; ``mixup`` and ``cutmix`` (the
  ablation baselines, same slot and weighting) need no CAM; ``none`` makes no mixed view.
- l_mix(i): anchor f(m_i), positive the second view's feature of image i; negatives the other images' clean
  features (contrastive methods) or the queue (moco). Under ``supcon`` the mix term is the only
  self-supervised part of the loss: L = theta L_supcon + lambda mean(w_i l_mix(i)).

With ``cam_grad="exact"`` the CAM gradient G = dL_con/dA comes from
``torch.autograd.grad(..., retain_graph=True)``, which back-propagates only from the loss down to
the CAM layers, and the step ends with one backward of L_con + lambda * mean(w * l_mix). With
``cam_grad="detached"`` G is recorded during the full backward of L_con and l_mix sees the clean
features detached (a second, smaller backward); cheaper, not the exact objective.

Speed: the step never waits for the device. Loss values, the fp16 overflow counter and the timing
events stay on the device; the training loop reads them back only every ``--log-every`` steps
(``read_log_fields``). Under ``--amp`` it runs bf16 autocast (fp16 + GradScaler with ``--amp-dtype
fp16``, CUDA only); the optimizer should be fused (``build_optimizer``), whose update reads nothing
back to the host, unlike the per-parameter Adam that reads its step counter.

Under torchrun the model is a DistributedDataParallel wrapper (distributed_run.wrap_model) and the losses
gather the features of the global batch. Each step does exactly one backward that DDP all-reduces: the
exact CAM gradient is an autograd.grad with respect to activations, which fills no parameter's .grad and
so starts no reduction (its backward through the losses' all-gather is a collective every rank runs); the
detached mode's first backward runs under ``no_sync`` (forward included, DDP decides at forward time), its
gradients stay local and the final backward all-reduces their sum with the mix term's.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from fastgradmix.distributed.launch import unwrap
from fastgradmix.gradmix.augment import MIX_VARIANTS, CamCapture, gradmix_view, resolve_ops
from fastgradmix.training.losses import gradmix_objective, mix_loss_per_sample, simclr_loss, supcon_loss
from fastgradmix.training.moco import MoCo, infonce_per_sample, moco_objective
from fastgradmix.training.pixel_mixing import MIXING_AUGS, mixed_view
from fastgradmix.training.timing import StepTimer, peak_memory_mib


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
        self.model = model  # what the step runs: the model or its DistributedDataParallel wrapper
        self.module = unwrap(model)  # the bare model: CAM layers, MoCo's key encoder
        self.optimizer = optimizer
        self.cfg = cfg
        self.device = device
        self.variant = MIX_VARIANTS.get(cfg.aug)  # the CAM-guided variant; None for mixup/cutmix/none
        self.mixing = cfg.aug in MIXING_AUGS  # a mixed view without a CAM
        self.exact_cam_grad = cfg.cam_grad == "exact"
        self.capture = None
        if self.variant is not None:
            self.capture = CamCapture(self.module, cfg.cam_layer_list(), keep_grads=not self.exact_cam_grad)
        self.ops = resolve_ops(cfg.gradmix_backend, device)
        self.moco = None
        if cfg.method == "moco":  # the key encoder copies the model as it is now (before any checkpoint load)
            self.moco = MoCo(self.module, cfg.feature_dim, cfg.moco_queue, cfg.moco_momentum, cfg.moco_key_splits,
                             generator=torch.Generator().manual_seed(cfg.seed))
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
        return [self.module.cam_module(name) for name in self.capture.layer_names]

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
        keys = None
        if self.moco is not None:  # the key encoder follows the weights of the last update, then encodes v2
            self.moco.update_key_encoder(self.module)
            with self.autocast():
                keys = self.moco.encode_keys(view2.contiguous(memory_format=self.memory_format), generator)  # (N, D)

        with self._local_gradients():
            # 1. clean views: one forward, capturing the CAM layers (moco: the queries' view v1 only)
            if self.capture is not None:
                self.capture.arm()
            with self.autocast():
                features = self._encode(view1 if keys is not None else torch.cat([view1, view2]))  # (N or 2N, D)
            if self.capture is not None:
                self.capture.disarm()
            z1, z2 = features[:n], features[n:]  # z2 is empty under moco
            terms = self._clean_terms(z1, z2, labels, keys)
            clean_loss = terms["loss"]
            if self.variant is None and not self.mixing:
                self.scaler.scale(clean_loss).backward()
                return self._finish(terms, keys)

            detach_clean = False
            if self.variant is not None:
                # 2. G = dL_con/dA at the CAM layers (only the first view's half is used). Under DDP, G is
                # the world size times the single-process gradient; the CAM is normalised per image.
                activations = self.capture.activations
                with self.timer.section("cam_grad"):
                    if self.exact_cam_grad:
                        gradients = torch.autograd.grad(self.scaler.scale(clean_loss), activations,
                                                        retain_graph=True)
                    else:  # accumulates L_con's parameter gradients locally (no_sync)
                        self.scaler.scale(clean_loss).backward()
                        gradients = self.capture.gradients
                        detach_clean = True
        if self.variant is not None:
            cam_acts = [a[:n].detach() for a in activations]  # each (N, C_l, h_l, w_l)
            cam_grads = [g[:n].detach() for g in gradients]
            # 3-8. CAM, boxes, window search, partner, paste, weights
            with self.timer.section("augment"):
                mixed = gradmix_view(view1, cam_acts, cam_grads, self.variant, (cfg.gamma_min, cfg.gamma_max),
                                     generator, self.ops)
        else:  # Mixup / CutMix: partner and mixing weights drawn per image, no CAM
            with self.timer.section("augment"):
                mixed = mixed_view(cfg.aug, view1, cfg.mix_alpha, generator)

        # 9. the mixed view's loss, weighted per image by w_i
        with self.autocast():
            z_mix = self._encode(mixed.images)  # (N, D)
        if keys is not None:  # positive k_i, negatives the queue (constants: no clean feature to detach)
            per_sample = infonce_per_sample(z_mix, keys, self.moco.queue, cfg.moco_temperature)
        elif detach_clean:  # --cam-grad detached: L_con's gradient is already in .grad
            per_sample = mix_loss_per_sample(z_mix, z1.detach(), z2.detach(), cfg.temperature, self.negatives_only)
        else:  # anchor z_mix_i, positive z2_i, negatives the other clean images
            per_sample = mix_loss_per_sample(z_mix, z1, z2, cfg.temperature, self.negatives_only)
        mix = (mixed.weights * per_sample).mean()
        if detach_clean:
            self.scaler.scale(cfg.lam * mix).backward()
        else:
            self.scaler.scale(clean_loss + cfg.lam * mix).backward()
        terms["mix"] = mix
        terms["loss"] = clean_loss + cfg.lam * mix
        return self._finish(terms, keys)

    def _local_gradients(self):
        """no_sync for the clean pass of --cam-grad detached under DDP, whose first backward must not
        all-reduce; nothing otherwise."""
        if self.variant is not None and not self.exact_cam_grad and self.model is not self.module:
            return self.model.no_sync()
        return nullcontext()

    def _clean_terms(self, z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor,
                     keys: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """L_con of the method and its parts, with a zero "mix" (filled in by the mixed view, if any)."""
        cfg = self.cfg
        if keys is not None:
            return moco_objective(z1, keys, self.moco.queue, lam=cfg.lam, temperature=cfg.moco_temperature)
        if cfg.method == "supcon+simclr":
            return gradmix_objective(z1, z2, labels, theta=cfg.theta, lam=cfg.lam, temperature=cfg.temperature,
                                     negatives_only=self.negatives_only)
        if cfg.method == "supcon":
            supcon = supcon_loss(z1, z2, labels, cfg.temperature, self.negatives_only)
            return {"loss": cfg.theta * supcon, "supcon": supcon, "mix": torch.zeros_like(supcon)}
        if cfg.method == "simclr":
            simclr = simclr_loss(z1, z2, cfg.temperature, self.negatives_only)
            return {"loss": cfg.lam * simclr, "simclr": simclr, "mix": torch.zeros_like(simclr)}
        raise ValueError(f"unknown method {cfg.method!r}")

    def _finish(self, terms: dict[str, torch.Tensor], keys: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
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
        if keys is not None:  # only now: the loss's backward needed the queue as it was
            self.moco.enqueue(keys)
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
