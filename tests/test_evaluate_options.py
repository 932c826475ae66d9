"""The evaluation's options: EvalConfig's defaults are the command line's, its parsed forms, and every option
check done before any run folder is read (the run here does not exist)."""

from __future__ import annotations

import dataclasses

import pytest

from fastgradmix.common.errors import UserError
from fastgradmix.evaluation.diversity_measures import area_thresholds
from fastgradmix.evaluation.options import TASKS, EvalConfig, parse_options


def test_defaults_are_the_command_lines():
    assert parse_options(["--run", "runs/x"]) == EvalConfig(run="runs/x")


def test_parsed_forms():
    options = parse_options(["--run", "runs/x", "--tasks", "ood, diversity", "--ood-out", "noise:uniform, folder:/x",
                             "--severities", "3,1,3", "--corruptions", "fog,snow", "--area-range", "1e-4,1e-2",
                             "--no-progress", "--topk", "5"])
    assert options.tasks == ("ood", "diversity") and not options.from_all
    assert options.ood_out == ("noise:uniform", "folder:/x")
    assert options.severities == (1, 3)
    assert options.corruptions == ("fog", "snow")
    assert options.area_thresholds == tuple(area_thresholds(1e-4, 1e-2, 9))
    assert options.compared_tasks == ("diversity",)
    assert options.topk == 5 and not options.progress
    assert parse_options(["--run", "r", "--tasks", " all "]).tasks == TASKS


def test_frozen():
    options = EvalConfig(run="runs/x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.seed = 1  # type: ignore[misc]
    assert dataclasses.replace(options, tasks=("corruption",), from_all=False).tasks == ("corruption",)


@pytest.mark.parametrize("extra,expected", [
    (["--tasks", "osr,sparkles"], "unknown task sparkles: choose from osr, closed, ood"),
    (["--severities", "0,2"], "--severities '0,2': each must be 1-5"),
    (["--severities", "two"], "--severities 'two': give comma-separated integers 1-5"),
    (["--corruptions", "rain"], "unknown corruption rain"),
    (["--max-bank", "-1"], "--max-images, --max-bank and --batch-size must be >= 0"),
    (["--topk", "0"], "--topk must be >= 1 (got 0)"),
    (["--tasks", "corruption", "--corruption-data", "/nonexistent/c"], "gaussian_noise.npy not found"),
    (["--cam-grid", "0"], "--cam-grid must be >= 1 (got 0)"),
    (["--area-range", "3"], "--area-range '3': give LOW,HIGH"),
    (["--area-range", "1e-3,1e-5"], "need 0 < LOW <= HIGH"),
    (["--tasks", "osr", "--compare", "runs/y"], "--compare compares corruption robustness"),
    (["--tasks", "ood", "--ood-out", "imagenet-r"], "--ood-out imagenet-r: not an OOD protocol"),
])
def test_bad_options(extra, expected):
    with pytest.raises(UserError) as error:
        parse_options(["--run", "/nonexistent/run", *extra])
    assert expected in str(error.value)


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_options(["--run", "r", "--score", "softmax"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
