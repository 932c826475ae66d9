"""What the training loop reads back from the device, and when: the losses of the last --log-every steps in
one copy, averaged over ranks, checked for NaN/inf; and the one-line messages for a diverged or
out-of-memory step."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from fastgradmix.distributed.collectives import mean_over_ranks
from fastgradmix.runs.config import Config


def read_losses(pending: list[dict[str, torch.Tensor]]) -> tuple[dict[str, float], int | None, dict[str, float]]:
    """Each loss term averaged over the pending steps, the offset of the first pending step whose loss is not
    finite (None if all are), with a single device-to-host copy; and, only then, that step's loss terms
    (a second copy, on the way to stopping the run)."""
    names = list(pending[0])
    per_step = torch.stack([torch.stack([losses[name] for name in names]) for losses in pending])  # (S, T)
    per_step = mean_over_ranks(per_step)  # the losses scale each rank's value so their mean is the global batch's
    finite = torch.isfinite(per_step[:, names.index("loss")]).to(per_step.dtype)  # (S,) 1 = finite
    values = torch.cat([per_step.mean(dim=0), finite]).tolist()
    flags = values[len(names):]
    bad_offset = flags.index(0.0) if 0.0 in flags else None
    bad_terms = {} if bad_offset is None else dict(zip(names, per_step[bad_offset].tolist(), strict=True))
    return dict(zip(names, values[:len(names)], strict=True)), bad_offset, bad_terms


# Far below any published contrastive temperature (SupCon/SimCLR 0.07-0.5, the paper 0.05, MoCo v2 0.2):
# the logits similarity / tau grow as 1 / tau and their gradients with them.
SMALL_TEMPERATURE = 1e-3
LARGE_WEIGHT = 1e6  # --theta/--lam: Adam is invariant to a loss's scale, so only an overflowing one hurts


def non_finite_message(cfg: Config, step: int, epoch: int, run_dir: Path, terms: dict[str, float]) -> str:
    """The one line for a NaN/inf loss: which loss terms, and the options most likely to blame."""
    broken = ", ".join(f"{name} {value}" for name, value in terms.items() if not math.isfinite(value))
    kept = (f"{run_dir / 'last.pt'} still holds the last good state (after epoch {epoch})" if epoch > 0
            else "no checkpoint was written (the first epoch did not finish)")
    return (f"the loss became non-finite (NaN or inf) at step {step} (epoch {epoch}): {broken or 'loss nan'}; "
            f"likely cause: {' or '.join(likely_causes(cfg, step))}; {kept}")


def likely_causes(cfg: Config, step: int) -> list[str]:
    """The options whose values can overflow the loss, most likely first; the learning rate only when an
    update happened before the step (step 0's loss is computed before any)."""
    causes = []
    if cfg.temperature < SMALL_TEMPERATURE and cfg.method != "moco":
        causes.append(f"--temperature {cfg.temperature} is tiny (logits = similarity / tau overflow; the paper "
                      "uses 0.05)")
    if cfg.moco_temperature < SMALL_TEMPERATURE and cfg.method == "moco":
        causes.append(f"--moco-temperature {cfg.moco_temperature} is tiny (logits = similarity / tau overflow; "
                      "MoCo v2 uses 0.2)")
    if max(cfg.theta, cfg.lam) >= LARGE_WEIGHT:
        causes.append(f"--theta {cfg.theta} / --lam {cfg.lam} scale the loss out of range")
    if cfg.amp and cfg.amp_dtype == "fp16":
        causes.append("fp16 overflowed in the forward pass (try --amp-dtype bf16)")
    if step > 0:
        causes.append(f"the learning rate (--lr {cfg.lr}) is too high, lower it")
    if not causes:
        causes.append("the first step's forward pass itself (no update had happened yet, so not the learning rate); "
                      "check the data and the loss options")
    return causes


def out_of_memory_message(cfg: Config, step: int) -> str:
    advice = "a smaller --batch-size" + ("" if cfg.amp else " or --amp (bf16 activations take half the memory)")
    return (f"CUDA ran out of memory at step {step} with --batch-size {cfg.batch_size}: try {advice}; "
            "checkpoints already written are intact")
