"""The native predictor: CMake builds fgm-predict against the installed torch wheel, and it gives the same
classes and scores as fastgradmix.predict on real digit images, the same --json lines, and the same
one-line problems and exit codes on bad input. Skips when cmake, a C++ compiler or libjpeg/libpng
development files are missing (CI installs them: .ci/run)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from deploy_helpers import (
    check_problem_lines,
    digit_images,
    exported_model,
    parse_text_lines,
    predict_cli,
    shared_folder,
    write_bad_inputs,
)

pytestmark = [pytest.mark.native, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
MISSING_LIBRARY = ("Could NOT find JPEG", "Could NOT find PNG")


def _build(folder: Path) -> None:
    """Configures and builds into folder/build; writes folder/status: ok, skip: ..., or fail: ..."""
    torch_dir = os.path.dirname(torch.__file__)
    steps = [["cmake", "-S", str(REPO), "-B", str(folder / "build"), f"-DTORCH_DIR={torch_dir}",
              "-DCMAKE_BUILD_TYPE=Release"],
             ["cmake", "--build", str(folder / "build"), "--parallel", "2"]]
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True, timeout=1500)
        log = result.stdout + result.stderr
        (folder / "build.log").open("a").write(log)
        if result.returncode != 0:
            missing = [name for name in MISSING_LIBRARY if name in log]
            status = f"skip: {missing[0]} (apt-get install libjpeg-dev libpng-dev)" if missing else \
                f"fail: {' '.join(step)}\n{log[-3000:]}"
            (folder / "status").write_text(status)
            return
    (folder / "status").write_text("ok")


@pytest.fixture(scope="module")
def fgm_predict(tmp_path_factory) -> Path:
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install cmake g++)")
    folder = shared_folder(tmp_path_factory, "native-build", _build)
    status = (folder / "status").read_text()
    if status.startswith("skip: "):
        pytest.skip(status[6:])
    assert status == "ok", status
    return folder / "build" / "fgm-predict"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return exported_model(tmp_path_factory)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return digit_images(tmp_path_factory)


def native(program: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(program), *map(str, args)], capture_output=True, text=True, timeout=300)


def test_json_writer_matches_python_repr_and_json_dumps(fgm_predict):
    """The pieces that make --json lines byte-identical, against Python itself, edge cases included."""
    import random

    rng = random.Random(0)
    floats = [0.0, -0.0, 1.0, -2.5, 9.74414348602295, 1e-4, 1e-5, 0.00012345, 1e16, 1e15, 123456789012345678.0,
              1.5e-300, 5e-324, 1.7976931348623157e308, float("inf"), float("-inf"), float("nan"), 10.0, 1 / 3]
    floats += [rng.uniform(-10, 10) for _ in range(300)] + [10 ** rng.uniform(-8, 20) for _ in range(300)]
    floats += [float(torch.tensor(rng.uniform(-10, 10), dtype=torch.float32)) for _ in range(300)]
    texts = ["plain/path.png", 'q"uote\\back', "tab\tnew\nline\r\b\f", "\x01\x1f\x7f", "dïgit ✓", "emoji 🙂",
             "中文/图片.jpg"]
    raw = [text.encode() for text in texts] + [b"bad \xff byte", b"\xc3(", b"\xed\xa0\x80 surrogate"]
    requests = [f"f {value.hex()}" for value in floats] + [f"q {data.hex()}" for data in raw]
    documents = ['{"a": [1, -2.5e-3, true, null, "x\\u00e9\\ud83d\\ude42"], "b": {}}', '{"a": }', "[1, 2", '"\\q"',
                 "01", "{} extra"]
    requests += [f"p {document}" for document in documents]
    checker = fgm_predict.with_name("fgm-json-check")
    result = subprocess.run([str(checker)], input="\n".join(requests) + "\n", capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    answers = result.stdout.split("\n")[:-1]
    expected = [json.dumps(value) for value in floats]
    expected += [json.dumps(data.decode("utf-8", "surrogateescape")) for data in raw]
    expected += ["ok", "error", "error", "error", "error", "error"]
    assert len(answers) == len(expected)
    mismatches = [(request, ours, theirs) for request, ours, theirs in zip(requests, answers, expected, strict=True)
                  if ours != theirs]
    assert not mismatches, mismatches[:5]


def test_native_gives_the_same_classes_and_scores_as_python(fgm_predict, model_dir, images, capsys):
    folders = [images.folder / "png", images.folder / "jpeg"]
    result = native(fgm_predict, "--model", model_dir, *folders)
    code, out, err = predict_cli(capsys, "--model", model_dir, *folders)
    assert result.returncode == code == 0 and result.stderr == err == ""
    ours, theirs = parse_text_lines(result.stdout), parse_text_lines(out)
    assert list(ours) == list(theirs) and len(ours) == len(images.png) + len(images.jpeg)
    for path, (label, score, threshold) in theirs.items():
        assert ours[path][0] == label, path
        assert ours[path][1] == pytest.approx(score, abs=1e-5) and ours[path][2] == threshold, path
    assert {label for label, _, _ in ours.values()} > {"unknown"}  # knowns and unknowns both answered


def test_native_json_lines_are_pythons(fgm_predict, model_dir, images, tmp_path, capsys):
    # a name with a space, quotes, a backslash and non-ASCII letters: both must escape it the same way
    odd = tmp_path / 'dïgit "7" \\ ✓.png'
    shutil.copy(images.png[3], odd)
    files = [odd, *images.png[::40], *images.jpeg[::6]]
    result = native(fgm_predict, "--json", "--model", model_dir, *files)
    code, out, _ = predict_cli(capsys, "--json", "--model", model_dir, *files)
    assert result.returncode == code == 0
    native_lines, python_lines = result.stdout.splitlines(), out.splitlines()
    assert len(native_lines) == len(python_lines) == len(files)
    for ours, theirs in zip(native_lines, python_lines, strict=True):
        ours_obj, theirs_obj = json.loads(ours), json.loads(theirs)
        assert ours_obj["score"] == pytest.approx(theirs_obj["score"], abs=1e-5)
        if ours_obj["score"] == theirs_obj["score"]:
            assert ours == theirs  # byte for byte, escapes and float digits included
        else:
            assert {**ours_obj, "score": 0} == {**theirs_obj, "score": 0}
    assert json.loads(native_lines[0])["path"] == str(odd)


def test_native_reports_bad_images_like_python(fgm_predict, model_dir, images, tmp_path, capsys):
    folder = tmp_path / "mixed"
    expected = write_bad_inputs(folder, images)
    args = ["--model", model_dir, folder, folder / "empty", folder / "missing.jpg"]
    result = native(fgm_predict, *args)
    code, out, err = predict_cli(capsys, *args)
    assert result.returncode == code == 1
    assert list(parse_text_lines(result.stdout)) == list(parse_text_lines(out)) == [str(folder / "good.png")]
    assert len(result.stderr.strip().splitlines()) == len(err.strip().splitlines()) == len(expected)
    check_problem_lines(result.stderr, "fgm-predict", expected)

    result = native(fgm_predict, "--model", model_dir, folder / "text.png", folder / "rgba.png")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and result.stdout == "" and len(lines) == 3
    assert lines[-1] == "fgm-predict: error: no image could be scored (2 problems above)"


def test_native_rejects_bad_model_folders_and_options_in_one_line(fgm_predict, model_dir, images, tmp_path):
    broken_program = tmp_path / "broken_program"
    shutil.copytree(model_dir, broken_program)
    (broken_program / "model.cpu.pt2").write_bytes(b"PK\x03\x04 this is no package")
    bad_json = tmp_path / "bad_json"
    shutil.copytree(model_dir, bad_json)
    (bad_json / "model.json").write_text('{"format": "fastgradmix-model", "format_version": 1, ')
    truncated_bank = tmp_path / "truncated_bank"
    shutil.copytree(model_dir, truncated_bank)
    (truncated_bank / "bank.bin").write_bytes((truncated_bank / "bank.bin").read_bytes()[:-10])
    cases = [
        (["--model", tmp_path / "missing", images.png[0]], "does not exist"),
        (["--model", images.folder, images.png[0]], "model.json is missing"),
        (["--model", bad_json, images.png[0]], "model.json is corrupt"),
        (["--model", truncated_bank, images.png[0]], "bank.bin is corrupt"),
        (["--model", broken_program, images.png[0]], "cannot load the compiled program"),
        ([images.png[0]], "--model"),
        (["--model", model_dir], "required: images"),
        (["--model", model_dir, "--batch-size", "0", images.png[0]], "--batch-size must be"),
        (["--model", model_dir, "--colour", images.png[0]], "unknown option --colour"),
    ]
    for args, problem in cases:
        result = native(fgm_predict, *args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and result.stdout == "" and len(lines) == 1, (args, result.stderr)
        assert lines[0].startswith("fgm-predict: error: ") and problem in lines[0], (args, result.stderr)
