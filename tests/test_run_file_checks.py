"""config.json and results.json read back strictly (runs/config_schema.py, runs/results_schema.py), and the
options checked before anything is written: each bad value is one line, exit code 2, nothing (re)written."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from fastgradmix.common.errors import UserError
from fastgradmix.evaluate import main as evaluate_main
from fastgradmix.export import main as export_main
from fastgradmix.runs.config import Config
from fastgradmix.runs.config_schema import check_config, config_schema
from fastgradmix.runs.results_schema import check_results
from fastgradmix.train import main as train_main
from fastgradmix.training.step_log import likely_causes

TINY = ["--width", "8", "--image-size", "16", "--batch-size", "64", "--cam-layers", "conv4_2", "--no-progress",
        "--eval-batch-size", "256", "--loader", "torch", "--workers", "0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("checks") / "run"
    train_main(TINY + ["--epochs", "1", "--out", str(run)])
    return run


def _snapshot(folder):
    return {path.relative_to(folder): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def _one_line_exit_2(capsys, main, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def _copy_with(trained, tmp_path, name, edit) -> object:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    text = (run / name).read_text()
    (run / name).write_text(edit(text))
    return run


def _set(key, raw):
    """An edit of a JSON file that sets ``key`` to the raw JSON text ``raw`` (1e999 stays as written)."""
    def edit(text: str) -> str:
        document = json.loads(text)
        document[key] = "@@"
        return json.dumps(document, indent=2).replace('"@@"', raw)
    return edit


@pytest.mark.parametrize("key,raw,expected", [
    ("width", '"sixteen"', 'width: must be int, got str "sixteen"'),
    ("image_size", "null", "image_size: must be int, got null"),
    ("topk", "-3", "topk: value must be >= 1, got -3"),
    ("lr", "1e999", "lr: must be a finite number, got inf"),
    ("image_size", "60000", "image_size: value must be <= 1024, got 60000"),
    ("aug", '"sparkles"', 'aug: must be one of none, mixup, cutmix, gradcam-mix, gradmix, got "sparkles"'),
    ("split", '"two"', 'split: must be int, got str "two"'),
    ("amp", "1", "amp: must be bool, got int 1"),
])
@pytest.mark.parametrize("tool", ["evaluate", "export"])
def test_a_damaged_config_json_is_one_line_for_evaluate_and_export(trained, tmp_path, capsys, key, raw, expected,
                                                                   tool):
    run = _copy_with(trained, tmp_path, "config.json", _set(key, raw))
    before = _snapshot(run)
    if tool == "evaluate":
        line = _one_line_exit_2(capsys, evaluate_main, ["--run", str(run), "--tasks", "closed", "--no-progress"])
    else:
        line = _one_line_exit_2(capsys, export_main, ["--run", str(run), "--out", str(tmp_path / "model")])
    assert line == f"fastgradmix.{tool}: error: {run / 'config.json'}: {expected}"
    assert _snapshot(run) == before and not (tmp_path / "model").exists()


def test_a_config_json_whose_options_contradict_each_other_is_refused(trained, tmp_path, capsys):
    run = _copy_with(trained, tmp_path, "config.json", _set("gamma_min", "0.9"))
    line = _one_line_exit_2(capsys, evaluate_main, ["--run", str(run), "--no-progress"])
    assert line.startswith(f"fastgradmix.evaluate: error: {run / 'config.json'}: need 0 < --gamma-min <= --gamma-max")


def test_resume_refuses_a_damaged_config_json_and_leaves_it(trained, tmp_path, capsys):
    run = _copy_with(trained, tmp_path, "config.json", _set("topk", "-3"))
    before = _snapshot(run)
    line = _one_line_exit_2(capsys, train_main, ["--resume", "--out", str(run)])
    assert line == f"fastgradmix.train: error: {run / 'config.json'}: topk: value must be >= 1, got -3"
    assert _snapshot(run) == before


def test_the_config_schema_covers_every_option_of_the_table():
    """Generated from the option table: each option's default passes; a value of the wrong type, null, and a
    number just outside the option's bounds are refused, naming the key."""
    schema = config_schema()
    defaults = Config().to_dict()
    assert set(schema) == set(defaults)
    check_config(defaults, "config.json")
    for option in dataclasses.fields(Config):
        wrong = 1.5 if option.type in ("str", "bool", "bool | None", "int") else "text"
        refused = (wrong,) if option.type.endswith("| None") else (wrong, None)  # None: "follow" (channels_last)
        for value in refused:
            with pytest.raises(UserError, match=f"config.json: {option.name}: must be"):
                check_config({**defaults, option.name: value}, "config.json")
        low, high, above = (option.metadata.get(name) for name in ("low", "high", "above"))
        outside = [bound - 1 for bound in (low,) if bound is not None] + [
            bound + 1 for bound in (high,) if bound is not None] + [above for above in (above,) if above is not None]
        for value in outside:
            with pytest.raises(UserError, match=f"config.json: {option.name}: value must be"):
                check_config({**defaults, option.name: value}, "config.json")
        if option.type == "float":
            with pytest.raises(UserError, match="finite"):
                check_config({**defaults, option.name: float("inf")}, "config.json")


def test_an_older_config_json_without_newer_keys_is_read_with_their_defaults():
    assert check_config({"protocol": "digits"}, "config.json") == {"protocol": "digits"}


@pytest.mark.parametrize("key,raw,expected", [
    ("auroc", '"high"', 'auroc: must be float, got str "high"'),
    ("auroc", "1.5", "auroc: value must be <= 1, got 1.5"),
    ("closed_acc", "1e999", "closed_acc: must be a finite number, got inf"),
    ("n_train", "-1", "n_train: value must be >= 0, got -1"),
    ("evaluation", "[]", "evaluation: must be dict, got list []"),
])
def test_a_damaged_results_json_is_refused_and_not_rewritten(trained, tmp_path, capsys, key, raw, expected):
    run = _copy_with(trained, tmp_path, "results.json", _set(key, raw))
    before = _snapshot(run)
    line = _one_line_exit_2(capsys, evaluate_main, ["--run", str(run), "--tasks", "closed", "--no-progress"])
    assert line == (f"fastgradmix.evaluate: error: {run / 'results.json'}: {expected}; fix or delete it, then "
                    "evaluate again")
    assert _snapshot(run) == before


def test_a_damaged_earlier_evaluation_record_is_refused_before_the_work(trained, tmp_path, capsys):
    run = _copy_with(trained, tmp_path, "results.json", _set("evaluation", '{"closed": {"closed_acc": 0.5}}'))
    before = _snapshot(run)
    line = _one_line_exit_2(capsys, evaluate_main, ["--run", str(run), "--tasks", "closed", "--no-progress"])
    assert "results.json: its \"evaluation\" record is damaged (KeyError: 'settings')" in line
    assert _snapshot(run) == before


def test_a_sweep_refuses_a_finished_splits_damaged_results(trained, tmp_path, capsys):
    base = tmp_path / "sweep"
    shutil.copytree(trained, base / "split0")
    (base / "split0" / "results.json").write_text(_set("auroc", '"high"')((trained / "results.json").read_text()))
    before = _snapshot(base)
    line = _one_line_exit_2(capsys, train_main, [*TINY, "--split", "all", "--epochs", "1", "--out", str(base)])
    assert line == (f"fastgradmix.train: error: --split all: {base / 'split0' / 'results.json'}: auroc: must be "
                    'float, got str "high"; delete it to rerun that split')
    assert _snapshot(base) == before


def test_results_keys_are_optional_for_evaluation_but_typed_when_present():
    assert check_results({"evaluation": {}}, "r.json", training_keys_required=False) == {"evaluation": {}}
    with pytest.raises(UserError, match="r.json: missing key 'protocol'"):
        check_results({"evaluation": {}}, "r.json")
    with pytest.raises(UserError, match="r.json: evaluation: skipped: must be dict"):
        check_results({"evaluation": {"skipped": "x"}}, "r.json", training_keys_required=False)


@pytest.mark.parametrize("args,expected", [
    (["--lr", "inf"], "argument --lr: 'inf' is not a finite number"),
    (["--lr", "nan"], "argument --lr: 'nan' is not a finite number"),
    (["--lr=-inf"], "argument --lr: '-inf' is not a finite number"),
    (["--temperature", "1e400"], "argument --temperature: '1e400' is not a finite number"),
    (["--lr", "0"], "--lr must be > 0 (got 0.0)"),
    (["--temperature", "-0.1"], "--temperature must be > 0 (got -0.1)"),
    (["--moco-momentum", "1.5"], "--moco-momentum must be <= 1 (got 1.5)"),
    (["--image-size", "60000"], "--image-size must be <= 1024 (got 60000)"),
    (["--seed", "-1"], "--seed must be >= 0 (got -1)"),
    (["--workers", "100000"], "--workers must be <= 1024 (got 100000)"),
])
def test_bad_numbers_are_refused_while_parsing_and_nothing_is_written(tmp_path, capsys, args, expected):
    out = tmp_path / "run"
    line = _one_line_exit_2(capsys, train_main, [*TINY, "--epochs", "1", "--out", str(out), *args])
    assert line.startswith(f"fastgradmix.train: error: {expected}"), line
    assert list(tmp_path.iterdir()) == []  # no run folder, no config.json, no lock file


def test_resume_with_an_infinite_lr_leaves_the_config_json_as_it_was(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = _snapshot(run)
    line = _one_line_exit_2(capsys, train_main, ["--resume", "--out", str(run), "--lr", "inf"])
    assert line.startswith("fastgradmix.train: error: argument --lr: 'inf' is not a finite number")
    assert _snapshot(run) == before
    assert "Infinity" not in (run / "config.json").read_text()


def test_a_tiny_temperature_is_named_as_the_cause_of_a_non_finite_loss(tmp_path, capsys):
    out = tmp_path / "run"
    line = _one_line_exit_2(capsys, train_main, [*TINY, "--epochs", "1", "--out", str(out), "--log-every", "1",
                                                 "--temperature", "1e-40"])
    assert line.startswith("fastgradmix.train: error: the loss became non-finite (NaN or inf) at step 0 (epoch 0): ")
    assert "likely cause: --temperature 1e-40 is tiny" in line and "--lr" not in line


def test_likely_causes_blame_the_learning_rate_only_after_an_update():
    assert all("--lr" not in cause for cause in likely_causes(Config(), step=0))
    assert any("--lr" in cause for cause in likely_causes(Config(), step=5))
    moco = likely_causes(Config(method="moco", moco_temperature=1e-9), step=0)
    assert moco[0].startswith("--moco-temperature 1e-09 is tiny")
    assert likely_causes(Config(amp=True, amp_dtype="fp16"), step=3)[0].startswith("fp16 overflowed")


def test_resume_keeps_whole_metrics_lines_and_refuses_a_damaged_one(tmp_path):
    from fastgradmix.training.run_files import truncate_metrics

    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 0, "loss": 1.5}\n{"step": 10}\n\n{"step": 11}\n')
    truncate_metrics(log, 11)
    assert log.read_text() == '{"step": 0, "loss": 1.5}\n{"step": 10}\n'
    log.write_text('{"step": 0}\n{"step": "ten"}\n')
    with pytest.raises(UserError, match=r"metrics.jsonl line 2: step: must be int, got str \"ten\"; fix or delete"):
        truncate_metrics(log, 11)
    assert log.read_text() == '{"step": 0}\n{"step": "ten"}\n'
