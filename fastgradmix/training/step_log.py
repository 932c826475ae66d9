"""What the training loop reads back from the device, and when: the losses of the last --log-every steps in
one copy, averaged over ranks, checked for NaN/inf; and the one-line messages for a diverged or
out-of-memory step."""

from __future__ import annotations

from pathlib import Path

import torch

from fastgradmix.distributed.collectives import mean_over_ranks
from fastgradmix.runs.config import Config


def read_losses(pending: list[dict[str, torch.Tensor]]) -> tuple[dict[str, float], int | None]:
    """Each loss term averaged over the pending steps, and the offset of the first pending step whose
    loss is not finite (None if all are), with a single device-to-host copy."""
    names = list(pending[0])
    per_step = torch.stack([torch.stack([losses[name] for name in names]) for losses in pending])  # (S, T)
    per_step = mean_over_ranks(per_step)  # the losses scale each rank's value so their mean is the global batch's
    finite = torch.isfinite(per_step[:, names.index("loss")]).to(per_step.dtype)  # (S,) 1 = finite
    values = torch.cat([per_step.mean(dim=0), finite]).tolist()
    flags = values[len(names):]
    bad_offset = flags.index(0.0) if 0.0 in flags else None
    return dict(zip(names, values[:len(names)], strict=True)), bad_offset


def non_finite_message(cfg: Config, step: int, epoch: int, run_dir: Path) -> str:
    if cfg.amp and cfg.amp_dtype == "fp16":
        cause = "fp16 overflowed in the forward pass (try --amp-dtype bf16) or the learning rate "
    else:
        cause = "the learning rate "
    kept = (f"{run_dir / 'last.pt'} still holds the last good state (after epoch {epoch})" if epoch > 0
            else "no checkpoint was written (the first epoch did not finish)")
    return (f"the loss became non-finite (NaN or inf) at step {step} (epoch {epoch}); likely cause: {cause}"
            f"(--lr {cfg.lr}) is too high, lower it; {kept}")


def out_of_memory_message(cfg: Config, step: int) -> str:
    advice = "a smaller --batch-size" + ("" if cfg.amp else " or --amp (bf16 activations take half the memory)")
    return (f"CUDA ran out of memory at step {step} with --batch-size {cfg.batch_size}: try {advice}; "
            "checkpoints already written are intact")
