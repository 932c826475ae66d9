"""Evaluating a run folder end to end: a run, or a sweep folder (``--split all``: split<k>/ runs, evaluated
split by split, then mean ± std), with the --compare run alongside.

Everything is computed first; then plots/*.png, the splits' results.json, the folder's results.json and
report.md are written (each atomically), so a failure leaves the folder as it was.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path

import torch

from fastgradmix.common.device import resolve_device
from fastgradmix.common.files import write_bytes, write_json
from fastgradmix.evaluation import report
from fastgradmix.evaluation.aggregate import aggregate_runs
from fastgradmix.evaluation.compare import compare_runs, load_compare_runs
from fastgradmix.evaluation.figures import figures
from fastgradmix.evaluation.one_run import evaluate_run
from fastgradmix.evaluation.options import PROG, EvalConfig
from fastgradmix.evaluation.results_file import merged, read_results, run_context
from fastgradmix.runs import lock
from fastgradmix.runs.folder import Run, load_run, locate_runs


def evaluate_folder(options: EvalConfig) -> dict:
    """Evaluates ``options.run`` and writes its outputs; returns the folder's new results.json content.
    The folder (and a sweep's split<k>/ runs) stay locked throughout (runs/lock.py): a training or another
    evaluation writing there stops this one before it reads anything, and the other way round."""
    device = resolve_device(options.device)
    root = Path(options.run)
    paths = locate_runs(root)
    with ExitStack() as held:
        for folder in dict.fromkeys([root, *paths]):
            held.enter_context(lock.locked(folder, PROG, create=False))
        return _evaluate_locked(options, device, root, paths)


def _evaluate_locked(options: EvalConfig, device: torch.device, root: Path, paths: list[Path]) -> dict:
    runs = [load_run(path, path.name if path != root else "") for path in paths]
    others = load_compare_runs(options, runs[0]) if options.compare else []
    result_paths = [run.path / "results.json" for run in runs] + ([root / "results.json"] if len(runs) > 1 else [])
    existing = {path: read_results(path) for path in result_paths}  # unreadable files fail before the work

    # compute everything first
    per_run, series_per_run, skipped = _evaluate_runs(runs, options, device)
    combined = aggregate_runs(per_run) if len(runs) > 1 else per_run[0][1]
    compare, compare_series = None, None
    compared_tasks = [task for task in options.compared_tasks if task in combined]
    if others and compared_tasks:
        compare, compare_series = compare_runs(others, options, compared_tasks, device, runs[0])
    new = dict(combined)
    if compare is not None:
        new["compare"] = compare

    # then write: figures, per-split results, the folder's results and report
    images = figures(series_per_run, new, compare, compare_series)
    return _write(root, runs, per_run, existing, new, skipped, images)


def _evaluate_runs(runs: list[Run], options: EvalConfig,
                   device: torch.device) -> tuple[list[tuple[Run, dict]], list[tuple[str, dict]], dict]:
    """(run, results) and (label, figure series) of each run, and the notes of the tasks skipped (the last
    run's: every split of a sweep has the same protocol)."""
    per_run, series_per_run = [], []
    skipped: dict = {}
    for index, run in enumerate(runs):
        if len(runs) > 1:
            print(f"{PROG}: {run.label} ({index + 1} of {len(runs)})", file=sys.stderr)
        evaluated = evaluate_run(run, options, device)
        skipped = evaluated.skipped
        per_run.append((run, evaluated.results))
        series_per_run.append((run.label, evaluated.series))
    return per_run, series_per_run, skipped


def _write(root: Path, runs: list[Run], per_run: list[tuple[Run, dict]], existing: dict[Path, dict], new: dict,
           skipped: dict, images: dict[str, bytes]) -> dict:
    """The figures, each split's results.json (a sweep), then the folder's report.md and results.json."""
    context = run_context(runs)
    for name, data in images.items():
        write_bytes(root / name, data)
    if len(runs) > 1:
        for run, results in per_run:
            path = run.path / "results.json"
            write_json(path, merged(existing[path], results, skipped, {**context, "split": run.cfg.split}))
    final = merged(existing[root / "results.json"], new, skipped, context)
    present = {name for name in report.FIGURES if (root / name).is_file()}
    write_bytes(root / "report.md", report.render(root, final, present).encode())
    write_json(root / "results.json", final)
    return final
