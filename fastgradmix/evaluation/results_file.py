"""A run folder's results.json as the evaluation sees it: read before any work (an unreadable file fails
early and is left as it is), and its "evaluation" key updated task by task (training's keys untouched)."""

from __future__ import annotations

import json
from pathlib import Path

from fastgradmix.common.errors import UserError
from fastgradmix.runs.folder import Run


def read_results(path: Path) -> dict:
    """The results.json at ``path``, {} when there is none."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {path} ({err}); fix or delete it, then evaluate again") from None


def run_context(runs: list[Run]) -> dict:
    """The "run" record of an evaluation: what was trained, and its split (a sweep: every split)."""
    cfg = runs[0].cfg
    context = {"protocol": cfg.protocol, "method": cfg.method, "aug": cfg.aug, "epochs": cfg.epochs, "seed": cfg.seed}
    context.update({"splits": [run.cfg.split for run in runs]} if len(runs) > 1 else {"split": cfg.split})
    return context


def merged(existing: dict, new: dict, skipped: dict, context: dict) -> dict:
    """``existing`` results with its "evaluation" updated task by task (training's keys untouched)."""
    evaluation = dict(existing.get("evaluation", {}))
    evaluation.update(new)
    # a note about a task (or one of its out-sets, "ood NAME") goes once the task is evaluated again
    notes = {task: why for task, why in evaluation.get("skipped", {}).items() if task.split()[0] not in new}
    notes.update(skipped)
    evaluation["skipped"] = notes
    evaluation["run"] = context
    return {**existing, "evaluation": evaluation}
