"""Started by tests/test_torchrun.py under torchrun: ``fastgradmix.train`` in which the rank named by
FGM_TEST_DYING_RANK kills itself with SIGKILL at training step 3 (as the OOM killer or kill -9 would)."""

from __future__ import annotations

import os
import signal
import sys

from fastgradmix.train import main
from fastgradmix.training import loop

DYING_RANK = int(os.environ["FGM_TEST_DYING_RANK"])
_real_cosine_lr = loop.cosine_lr


def _cosine_lr_or_die(base_lr: float, step: int, total_steps: int) -> float:
    if step == 3 and int(os.environ["RANK"]) == DYING_RANK:
        os.kill(os.getpid(), signal.SIGKILL)
    return _real_cosine_lr(base_lr, step, total_steps)


loop.cosine_lr = _cosine_lr_or_die  # the loop calls it once per step
main(sys.argv[1:])
