"""One training step: clean views -> L_con -> (CAM -> mixed view -> l_mix) -> one update.

DESIGN.md section 2, steps 1-9, for every ``--method`` (an objective, objectives/) and ``--aug`` (a
mixed-view strategy, mixed_views/); ``TrainStep._step`` calls them in this order:

1. clean views: ``objective.before_step`` (moco: key encoder update, keys f_k(v2)), the strategy's CAM
   capture armed, one forward of ``objective.clean_views`` ([v1; v2], or v1 under moco), then
   ``objective.clean_terms``: L_con is theta L_supcon + lambda L_simclr (``supcon+simclr``), theta L_supcon
   (``supcon``), lambda L_simclr (``simclr``) or lambda L_moco (``moco``: queries f_q(v1), negatives a
   queue of earlier keys). ``--aug none`` ends here: one backward of L_con.
2. ``mixing.cam_gradient``: G = dL_con/dA at the CAM layers (``gradmix``, ``gradcam-mix`` only; timed as
   "cam_grad").
3-8. ``mixing.make``: the mixed view m of v1 and its weights w_i (timed as "augment"): GradMix pastes a
   resized partner where the CAM is highest (fastgradmix/gradmix); ``mixup`` and ``cutmix``, the ablation
   baselines in the same slot and weighting, need no CAM.
9. l_mix(i) = ``objective.mix_per_sample`` of f(m): anchor f(m_i), positive the second view's feature of
   image i (moco: its key), negatives the other images' clean features (moco: the queue); the loss is
   L_con + lambda mean(w_i l_mix(i)), one backward, the optimizer step, ``objective.after_step`` (moco:
   enqueue the keys). Under ``supcon`` the mix term is the only self-supervised part of the loss.

With ``cam_grad="exact"`` G comes from ``torch.autograd.grad(..., retain_graph=True)``, which
back-propagates only from the loss down to the CAM layers, and the step ends with one backward of
L_con + lambda * mean(w * l_mix). With ``cam_grad="detached"`` G is recorded during the full backward of
L_con and l_mix sees the clean features detached (a second, smaller backward); cheaper, not the exact
objective (see mixed_views/cam_guided.py).

Speed: the step never waits for the device. Loss values, the fp16 overflow counter and the timing
events stay on the device; the training loop reads them back only every ``--log-every`` steps
(``read_log_fields``). Under ``--amp`` it runs bf16 autocast (fp16 + GradScaler with ``--amp-dtype
fp16``, CUDA only); the optimizer should be fused (``build_optimizer``), whose update reads nothing
back to the host, unlike the per-parameter Adam that reads its step counter.

Under torchrun the model is a DistributedDataParallel wrapper (distributed/launch.wrap_model) and the losses
gather the features of the global batch. Each step does exactly one backward that DDP all-reduces: the
exact CAM gradient is an autograd.grad with respect to activations, which fills no parameter's .grad and
so starts no reduction (its backward through the losses' all-gather is a collective every rank runs); the
detached mode's first backward runs under ``no_sync`` (forward included, DDP decides at forward time), its
gradients stay local and the final backward all-reduces their sum with the mix term's.

``--cam-schedule epoch`` (mixed_views/epoch_boxes.py) changes steps 2-8: the mixed view pastes into the boxes
each image got in its previous epoch (none in the first epoch: L_con alone), the step's one backward records
G, and after it the CAM places the boxes for the images' next epoch. The loop passes each batch's dataset
rows (``indices``) and calls ``begin_epoch`` / ``end_epoch`` around the epoch's steps.

Checkpoints: ``state_dict()`` holds "optimizer", "scaler", the objective's state under its ``state_key``
("moco") and the mixed view's under its own ("cam_boxes"); ``load_state_dict`` restores the same entries (the
loop adds "model", "epoch", ...).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from fastgradmix.distributed.launch import unwrap
from fastgradmix.gradmix.ops import resolve_ops
from fastgradmix.training.mixed_views import build_mixed_view
from fastgradmix.training.objectives import build_objective
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
    """``step(view1, view2, labels, generator)`` runs one update; see the module docstring.

    ``model`` is what the step runs: the model or its DistributedDataParallel wrapper.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, cfg, device: torch.device,
                 num_images: int | None = None):
        self.model = model
        self.module = unwrap(model)  # the bare model: CAM layers, MoCo's key encoder
        self.optimizer = optimizer
        self.cfg = cfg
        self.device = device
        resolve_ops(cfg.gradmix_backend, device)  # a backend this device cannot run is an error whatever --aug
        # the strategy first: its CAM hooks exist before MoCo copies the model (the copy drops them)
        self.mixing = build_mixed_view(cfg, self.module, device, num_images)  # num_images: --cam-schedule epoch
        self.objective = build_objective(cfg, self.module)  # MoCo: the key encoder copies the model as it is now
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
        self.last_mixed_view = None  # --tensorboard: the last step's mixed view, for the epoch's picture

    @property
    def cam_modules(self) -> list[nn.Module]:
        """The modules whose outputs the CAM hooks capture (none without a CAM): ``--compile``'s boundaries."""
        return self.mixing.cam_modules

    def uncaptured_modules(self) -> list[nn.Module]:
        """Modules besides the model, without CAM hooks, that ``--compile`` compiles whole: the objective's
        ``extra_compile_modules`` (MoCo's key encoder)."""
        return self.objective.extra_compile_modules

    @property
    def moco(self) -> nn.Module | None:
        """MoCo's key encoder and queue under ``--method moco`` (tests read its queue), else None."""
        return getattr(self.objective, "moco", None)

    def state_dict(self) -> dict:
        """The step's share of a checkpoint: "optimizer", "scaler" and (moco) "moco"."""
        state = {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}
        if self.objective.state_key is not None:
            state[self.objective.state_key] = self.objective.state_dict()
        if self.mixing.state_key is not None:  # --cam-schedule epoch: the kept boxes
            state[self.mixing.state_key] = self.mixing.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restores what ``state_dict`` saved. A checkpoint that does not fit raises KeyError (an entry
        missing), ValueError (optimizer parameter groups) or RuntimeError (MoCo's tensors)."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.objective.state_key is not None:  # key encoder, queue and its pointer: the exact MoCo state
            self.objective.load_state_dict(state[self.objective.state_key])
        if self.mixing.state_key is not None:
            self.mixing.load_state_dict(state[self.mixing.state_key])

    def begin_epoch(self, epoch: int) -> None:
        """Before the first step of ``epoch`` (0-based), also the first epoch of a resumed run."""
        self.mixing.begin_epoch(epoch)

    def end_epoch(self) -> None:
        """After an epoch's last step, on every rank, before its checkpoint is saved."""
        self.mixing.end_epoch()

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.contiguous(memory_format=self.memory_format))

    def __call__(self, view1: torch.Tensor, view2: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator, indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """view1, view2 (N, C, H, W) float; labels (N,) int64; indices (N,) int64 the images' rows of the
        training set (needed by --cam-schedule epoch only). Returns detached scalar losses (on the device).

        Batches may come from the host (pinned memory): the copies are asynchronous.
        """
        view1, view2, labels = (t.to(self.device, non_blocking=True) for t in (view1, view2, labels))
        if indices is not None:
            indices = indices.to(self.device, non_blocking=True)
        self.timer.start("step")
        losses = self._step(view1, view2, labels, generator, indices)
        self.timer.stop("step")
        return losses

    def _step(self, view1: torch.Tensor, view2: torch.Tensor, labels: torch.Tensor,
              generator: torch.Generator, indices: torch.Tensor | None) -> dict[str, torch.Tensor]:
        lam = self.cfg.lam
        self.optimizer.zero_grad(set_to_none=True)
        self.objective.before_step(view2, generator, self.autocast)  # moco: keys of v2 (draws the key split)
        with self._local_gradients():
            # 1. clean views: one forward with the CAM layers captured, then L_con and its parts
            self.mixing.arm()
            with self.autocast():
                features = self._encode(self.objective.clean_views(view1, view2))  # (2N, D); moco (N, D)
            self.mixing.disarm()
            terms = self.objective.clean_terms(features, labels)
            clean_loss = terms["loss"]
            if not self.mixing.makes_view:
                self.scaler.scale(clean_loss).backward()
                return self._finish(terms)
            if self.mixing.uses_cam:  # 2. G = dL_con/dA (or --cam-loss self-supervised's) at the CAM layers
                with self.timer.section("cam_grad"):
                    self.mixing.cam_gradient(self.objective.cam_loss(terms, self.cfg.cam_loss), self.scaler)
        # 3-8. the mixed view of v1: images (N, C, H, W), weights w (N,)
        with self.timer.section("augment"):
            mixed = self.mixing.make(view1, generator, indices)
        if mixed is None:  # --cam-schedule epoch's first epoch: no kept box yet, the loss is L_con alone
            self.scaler.scale(clean_loss).backward()
            terms["mix"] = torch.zeros_like(clean_loss)
            self._after_backward(view1, generator, indices)
            return self._finish(terms)
        if self.cfg.tensorboard:
            self.last_mixed_view = mixed
        # 9. the mixed view's loss, weighted per image by w_i
        with self.autocast():  # (N, D); --mix-anchors clean: [f(m); f(v2)] (2N, D) from one forward
            z_mix = self._encode(self.objective.mixed_views(mixed.images, view2))
        detached = self.mixing.backpropagates_clean_loss  # --cam-grad detached: L_con's gradient is in .grad
        per_sample = self.objective.mix_per_sample(z_mix, detach_clean=detached)  # (N,)
        mix = (mixed.weights * per_sample).mean()
        if detached:
            self.scaler.scale(lam * mix).backward()
        else:
            self.scaler.scale(clean_loss + lam * mix).backward()
        self._after_backward(view1, generator, indices)
        terms["mix"] = mix
        terms["loss"] = clean_loss + lam * mix
        return self._finish(terms)

    def _after_backward(self, view1: torch.Tensor, generator: torch.Generator, indices: torch.Tensor | None) -> None:
        if self.mixing.works_after_backward:  # --cam-schedule epoch: the boxes of the images' next epoch
            with self.timer.section("augment"):
                self.mixing.after_backward(view1, generator, indices)

    def _local_gradients(self):
        """no_sync for the clean pass of a strategy that back-propagates L_con itself (--cam-grad detached)
        under DDP, whose first backward must not all-reduce; nothing otherwise."""
        if self.mixing.backpropagates_clean_loss and self.model is not self.module:
            return self.model.no_sync()
        return nullcontext()

    def _finish(self, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The optimizer step (through the scaler), then the objective's after-step work."""
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
        self.objective.after_step()  # moco: enqueue the keys
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
