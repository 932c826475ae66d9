"""results.json's schema: the keys training writes (training/results.py) typed with their ranges, and the
outline of the "evaluation" key that fastgradmix.evaluate adds (evaluation/results_file.py).

results.json is read back by ``--split all`` (a finished split's results enter the sweep's table), by
fastgradmix.evaluate (it updates the file's "evaluation" key) and by bench/ablation.py. A damaged or edited
file is refused in one line naming it and the key, and is left as it is: never rewritten around the damage.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from fastgradmix.common.errors import UserError
from fastgradmix.common.schema import Field, check, first_non_finite, read_json_file

_FRACTION = Field("float", low=0, high=1)
_COUNT = Field("int", low=0)
_SECONDS = Field("float", low=0)
_NAMES = Field("list", item=Field("str"))

# what training writes at the end of a run (training.results.results_record)
TRAINING_KEYS: dict[str, Field] = {
    "protocol": Field("str", low=1),
    "split": Field("int", low=0, also=("all",)),
    "method": Field("str"),
    "aug": Field("str"),
    "epochs": Field("int", low=1),
    "seed": Field("int", low=0),
    "auroc": Field("float", low=0, high=1, nullable=True),  # null: a closed-set protocol has no unknowns
    "closed_acc": _FRACTION,
    "openness": _FRACTION,
    "n_train": _COUNT,
    "n_known_test": _COUNT,
    "n_unknown_test": _COUNT,
    "known_classes": _NAMES,
    "unknown_classes": _NAMES,
    "train_wall_s": _SECONDS,
    "images_per_s": _SECONDS,
    "device": Field("str"),
    "torch": Field("str"),
    "fastgradmix": Field("str"),
    "python": Field("str"),
}

# the "evaluation" key: one record per task evaluated, the run it describes, the tasks skipped and why
EVALUATION_TASKS = ("osr", "closed", "ood", "corruption", "linear", "diversity", "compare")
EVALUATION_KEYS: dict[str, Field] = {
    **{task: Field("dict", required=False) for task in EVALUATION_TASKS},
    "run": Field("dict", required=False),
    "skipped": Field("dict", required=False),
}


def results_schema(training_keys_required: bool) -> dict[str, Field]:
    """The schema of a results.json; without ``training_keys_required`` every training key may be missing
    (a run stopped early, or a sweep folder's own file, holds only "evaluation") but is typed when present."""
    keys = {name: replace(field, required=training_keys_required) for name, field in TRAINING_KEYS.items()}
    return {**keys, "evaluation": Field("dict", required=False)}


def check_results(document: Any, label: str, training_keys_required: bool = True) -> dict:
    """A parsed results.json checked; returns it, or raises UserError('<label>: <key>: ...')."""
    results = check(document, results_schema(training_keys_required), label)
    evaluation = results.get("evaluation")
    if evaluation is not None:
        check(evaluation, EVALUATION_KEYS, f"{label}: evaluation")
        skipped = evaluation.get("skipped", {})
        for task, why in skipped.items():
            if not isinstance(why, str):
                raise UserError(f"{label}: evaluation.skipped.{task}: must be str, got {type(why).__name__}")
        where = first_non_finite(evaluation, "evaluation")
        if where is not None:  # the JSON reader refuses NaN literals; 1e999 still parses as infinity
            raise UserError(f"{label}: {where}: must be a finite number")
    return results


def read_results_file(path: Path, training_keys_required: bool = True) -> dict:
    """The results.json at ``path``, strictly parsed and checked, or one UserError line naming it."""
    return check_results(read_json_file(path), str(path), training_keys_required)
