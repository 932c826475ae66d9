"""Started by tests/test_torchrun.py under torchrun: ``fastgradmix.train`` in which the rank named by
FGM_TEST_DYING_RANK kills itself with SIGKILL at training step 3 (as the OOM killer or kill -9 would)."""

from __future__ import annotations

import os
import signal
import sys

from fastgradmix.train import main
from fastgradmix.training import loop

DYING_RANK = int(os.environ["FGM_TEST_DYING_RANK"])
_real_learning_rate = loop.learning_rate


def _learning_rate_or_die(schedule: str, base_lr: float, step: int, steps_per_epoch: int, epochs: int) -> float:
    if step == 3 and int(os.environ["RANK"]) == DYING_RANK:
        os.kill(os.getpid(), signal.SIGKILL)
    return _real_learning_rate(schedule, base_lr, step, steps_per_epoch, epochs)


loop.learning_rate = _learning_rate_or_die  # the loop calls it once per step
main(sys.argv[1:])
