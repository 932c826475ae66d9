"""A run folder's results.json as the evaluation sees it: read and checked before any work (an unreadable or
damaged file fails early and is left as it is), and its "evaluation" key updated task by task (training's
keys untouched)."""

from __future__ import annotations

from pathlib import Path

from fastgradmix.common.errors import UserError
from fastgradmix.evaluation import report
from fastgradmix.runs.folder import Run
from fastgradmix.runs.results_schema import read_results_file


def read_results(path: Path) -> dict:
    """The results.json at ``path`` checked against its schema (runs/results_schema.py), {} when there is
    none. Its earlier evaluation records are rendered once, unwritten, so a damaged one is refused now,
    before any work, rather than when the report is rebuilt at the end."""
    if not path.is_file():
        return {}
    try:
        results = read_results_file(path, training_keys_required=False)
    except UserError as err:
        raise UserError(f"{err}; fix or delete it, then evaluate again") from None
    if "evaluation" in results:
        try:
            report.render(path.parent, results, set())
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:
            raise UserError(f"{path}: its \"evaluation\" record is damaged ({type(err).__name__}: {err}); delete "
                            "that key or the file, then evaluate again") from None
    return results


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
