"""``--compare runs/OTHER``: the comparable tasks (corruption robustness, feature diversity) of another run,
evaluated in memory with the same options (nothing is written to its folder), side by side with this run's
in results.json, report.md and the figures."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from fastgradmix.common.errors import UserError
from fastgradmix.evaluation.aggregate import aggregate_runs
from fastgradmix.evaluation.one_run import evaluate_run
from fastgradmix.evaluation.options import EvalConfig
from fastgradmix.runs.folder import Run, load_run, locate_runs


def load_compare_runs(options: EvalConfig, this: Run) -> list[Run]:
    """The run(s) of --compare (a sweep folder: its splits); diversity needs them on this run's test images."""
    root = Path(options.compare)
    others = [load_run(path, path.name if path != root else "") for path in locate_runs(root)]
    if "diversity" in options.compared_tasks and (others[0].cfg.protocol, others[0].cfg.split) != (
            this.cfg.protocol, this.cfg.split):
        raise UserError(f"--compare {options.compare}: diversity compares runs on the same test images, but it is "
                        f"{others[0].cfg.protocol} split {others[0].cfg.split}, this run "
                        f"{this.cfg.protocol} split {this.cfg.split}")
    return others


def compare_runs(others: list[Run], options: EvalConfig, tasks: list[str], device: torch.device,
                 this: Run) -> tuple[dict, dict | None]:
    """The comparable ``tasks`` on the other run(s).

    Returns the comparison for results.json ({"run", "aug", "this_aug", and a result per task}) and the other
    run's diversity series for the figures (its first split's, in a sweep), or None.
    """
    only_these = dataclasses.replace(options, tasks=tuple(tasks), from_all=False)
    per_run, first_series = [], None
    for run in others:
        evaluated = evaluate_run(run, only_these, device)
        per_run.append((run, evaluated.results))
        first_series = first_series or evaluated.series.get("diversity")
    other = aggregate_runs(per_run) if len(per_run) > 1 else per_run[0][1]
    compare = {"run": str(options.compare), "aug": others[0].cfg.aug, "this_aug": this.cfg.aug,
               "method": others[0].cfg.method, "this_method": this.cfg.method}
    compare.update({task: other[task] for task in tasks if task in other})
    return compare, first_series
