"""Which of the requested tasks apply to a run, and with which out-sets.

With ``--tasks all`` a task the run cannot do (osr on a closed-set protocol, ood without an out-set) is
skipped with a note in results.json; a task asked for by name that the run cannot do is an error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from fastgradmix.common.errors import UserError
from fastgradmix.data.openset import OpenSetData
from fastgradmix.evaluation.options import EvalConfig
from fastgradmix.evaluation.out_sets import default_out_sets
from fastgradmix.runs.config import Config


@dataclass(frozen=True)
class Plan:
    """The tasks to evaluate, in the requested order; the out-sets of ood; the notes of the tasks skipped."""

    tasks: tuple[str, ...]
    out_sets: tuple[str, ...] = ()
    skipped: dict[str, str] = field(default_factory=dict)

    def with_out_sets(self, loaded: dict[str, torch.Tensor], notes: dict[str, str]) -> Plan:
        """The plan once the out-sets are read: ood goes when none could be, the notes of those left out join."""
        tasks = tuple(task for task in self.tasks if task != "ood" or loaded)
        return dataclasses.replace(self, tasks=tasks, skipped={**self.skipped, **notes})


def plan(cfg: Config, data: OpenSetData, options: EvalConfig) -> Plan:
    """Which of ``options.tasks`` apply to this run; with ``all`` the others are skipped with a note, else it
    is an error. ood's out-sets: --ood-out, or the default pairing of the run's protocol."""
    tasks, skipped = [], {}
    out_sets = options.ood_out or tuple(default_out_sets(cfg.protocol))
    for task in options.tasks:
        why = None
        if task == "osr" and data.n_unknown_test == 0:
            why = f"protocol {cfg.protocol} is closed-set: it has no unknown test classes"
        if task == "ood" and not out_sets:
            why = (f"protocol {cfg.protocol} has no OOD pairing (CIFAR-10 runs: cifar10-closed -> cifar10-vs-cifar100, "
                   "cifar10-vs-svhn); choose an out-set with --ood-out (folder:PATH, noise:uniform, ...)")
        if why is None:
            tasks.append(task)
        elif options.from_all:
            skipped[task] = why
        else:
            raise UserError(f"--tasks {task}: {why}")
    return Plan(tuple(tasks), out_sets if "ood" in tasks else (), skipped)
