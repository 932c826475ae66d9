"""The native predictor: CMake builds fgm-predict against the installed torch wheel, and it gives the same
classes and scores as fastgradmix.predict on real digit images, the same --json lines, and the same
one-line problems and exit codes on bad input, the same model.json rules (schema table, strict JSON),
pixel limit, path escaping and folder walk. Skips when cmake, a C++ compiler or the libjpeg/libpng/
nlohmann-json development files are missing (CI installs them: .ci/run)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from deploy_helpers import (
    check_problem_lines,
    digit_images,
    exported_model,
    parse_text_lines,
    predict_cli,
    write_bad_inputs,
)
from model_cases import CASES, expected_message
from native_build import native_program

pytestmark = [pytest.mark.native, pytest.mark.slow]


@pytest.fixture(scope="module")
def fgm_predict(tmp_path_factory) -> Path:
    return native_program(tmp_path_factory)


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
    raw += [b"\xf5\x80\x80 above U+10FFFF", b"\xf8\x88\x80\x80\x80", b"\xf4\x90\x80\x80", b"\xe0\x80\xaf overlong",
            b"cut \xe2\x82"]
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
        (["--model", bad_json, images.png[0]], "model.json: not valid JSON"),
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


# ---- issue 17: the same rules, limits and words from both predictors ------------------------------------


def json_check(fgm_predict: Path, requests: list[str]) -> list[str]:
    checker = fgm_predict.with_name("fgm-json-check")
    result = subprocess.run([str(checker)], input="\n".join(requests) + "\n", capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\n")[:-1]


def _python_answer(document: bytes, whole_model: bool) -> str:
    from fastgradmix.common.errors import UserError
    from fastgradmix.common.schema import check_portable, parse_json_text
    from fastgradmix.deploy.model_schema import check_meta

    try:
        parsed = check_portable(parse_json_text(document, "L"), "L")
        if whole_model:
            check_meta(parsed, "L")
        return "ok"
    except UserError as error:
        return str(error)


def _same_refusal(python: str, native: str) -> bool:
    """Equal, or both 'not valid JSON (' (the parsers' own words for a syntax error differ)."""
    cut = python.find("not valid JSON (")
    return python == native or (cut >= 0 and python[:cut + 16] == native[:cut + 16])


def test_strict_json_and_model_schema_refuse_like_python(fgm_predict):
    """Hundreds of model.json texts (the fuzz test's mutations of a small model) through both readers:
    the same verdict and the same message, parse and schema alike."""
    from test_model_fuzz import make_mutations

    meta = {"format": "fastgradmix-model", "format_version": 1, "class_names": list("abcdef"),
            "preprocessing": {"image_size": 16, "channels": 1, "mean": [0.5], "std": [0.5]},
            "scoring": {"topk": 10, "threshold": 9.7, "tpr": 0.95},
            "bank": {"file": "bank.bin", "size": 2, "feature_dim": 2}, "programs": {"cpu": "model.cpu.pt2"}}
    bank = b"FGMBANK1" + struct.pack("<4I", 2, 2, 6, 0) + np.eye(2, dtype="<f4").tobytes() + bytes(8)
    documents = [m.meta for m in make_mutations(meta, bank, 600, seed=3)]
    documents += [b'{"a": NaN}', b'[-Infinity]', b"[1e400]", b"[9223372036854775807]", b"[18446744073709551615]",
                  b"[-9223372036854775809]", b'"\\ud800"', b'{"\\udc00": 1}', b"\xef\xbb\xbf{}", b'{"a":1,"a":2}',
                  b'{"a": "\\u00e9\\ud83d\\ude42"}', b"[1e-400, 5e-324, -0.0]", b"[" * 65 + b"]" * 65]
    for command, whole_model in (("P", False), ("m", True)):
        answers = json_check(fgm_predict, [f"{command} {document.hex()}" for document in documents])
        expected = [_python_answer(document, whole_model) for document in documents]
        differ = [(d, e, a) for d, e, a in zip(documents, expected, answers, strict=True) if not _same_refusal(e, a)]
        assert not differ, differ[:3]
        assert sum(answer == "ok" for answer in answers) >= (3 if whole_model else 100)


def test_the_schema_tables_are_the_same(fgm_predict):
    from fastgradmix.deploy.model_schema import PREPROCESSING, PROGRAM_FILE, SCHEMAS

    def line(table: str, key: str, field) -> str:
        def bound(value):
            return "-" if value is None else str(value)
        choices = ",".join(map(str, field.choices)) if field.choices else "-"
        item = f"{field.item.kind} {bound(field.item.low)} {bound(field.item.high)}" if field.item else "- - -"
        return f"{table} {key} {field.kind} {bound(field.low)} {bound(field.high)} {choices} {item}"

    expected = [line(name or "top", key, field) for name, table in SCHEMAS.items() for key, field in table.items()]
    expected.append(line("programs", "*", PROGRAM_FILE))
    assert json_check(fgm_predict, ["s"])[:-1] == expected and "image_size" in PREPROCESSING


def test_paths_are_escaped_and_normalised_like_python(fgm_predict):
    from fastgradmix.deploy.printable import printable

    paths = [b"plain/path.png", b"new\nline.png", b"tab\t\r\x07\x7f.png", b"back\\slash", "dïgit ✓ 🙂".encode(),
             "c1 \x85".encode(), b"bad \xff\xc3(", b"\xed\xa0\x80", b"\xf5\x80\x80"]
    answers = json_check(fgm_predict, [f"e {path.hex()}" for path in paths])
    assert answers == [printable(os.fsdecode(path)) for path in paths]
    folders = ["m", "m/", "./m", "a//b/./c/", ".", "./", "/", "//x", "///x", "../m/.."]
    answers = json_check(fgm_predict, [f"n {folder.encode().hex()}" for folder in folders])
    assert answers == [str(Path(folder)) for folder in folders]


def _both(fgm_predict, capsys, *args) -> tuple[tuple, tuple]:
    """(exit code, stdout, stderr lines without the program name) from each predictor."""
    native_run = subprocess.run([str(fgm_predict), *map(str, args)], capture_output=True, timeout=300)
    code, out, err = predict_cli(capsys, *args)

    def problems(stderr: str, prog: str) -> list[str]:
        assert all(line.startswith(f"{prog}: error: ") for line in stderr.splitlines()), stderr
        return [line[len(prog) + 9:] for line in stderr.splitlines()]

    native_err = native_run.stderr.decode("utf-8", "surrogateescape")
    return ((code, out.encode("utf-8", "surrogateescape"), problems(err, "fastgradmix.predict")),
            (native_run.returncode, native_run.stdout, problems(native_err, "fgm-predict")))


CASE_NAMES = [case.name for case in CASES] + ["program compiled for another image_size"]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_damaged_model_folders_are_the_same_one_line_from_both(fgm_predict, model_dir, images, tmp_path, capsys,
                                                              name):
    from fastgradmix.deploy.printable import printable

    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    if name in [case.name for case in CASES]:
        case = next(case for case in CASES if case.name == name)
        case.damage(folder)
        expected = expected_message(case, folder, printable)
    else:
        meta = json.loads((folder / "model.json").read_text())
        meta["preprocessing"]["image_size"] = 17
        (folder / "model.json").write_text(json.dumps(meta))
        expected = (f"{folder}/model.cpu.pt2 takes 1 x 16 x 16 inputs and gives 128 features, but model.json says "
                    "channels 1, image_size 17 and bank feature_dim 128; export the model again")
    python, native = _both(fgm_predict, capsys, "--model", folder, images.png[0])
    assert python == native == (2, b"", [expected])


def test_threshold_1e400_underflow_and_tiny_std_agree(fgm_predict, model_dir, images, tmp_path, capsys):
    """threshold 1e-400 is 0.0 (a double underflows) in both; every image is then known."""
    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    text = (folder / "model.json").read_text()
    threshold = json.loads(text)["scoring"]["threshold"]
    (folder / "model.json").write_text(text.replace(f'"threshold": {threshold!r}', '"threshold": 1e-400'))
    python, native = _both(fgm_predict, capsys, "--model", folder, "--json", images.png[0], images.jpeg[0])
    assert python[0] == native[0] == 0 and python[2] == native[2] == []
    for ours, theirs in zip(native[1].splitlines(), python[1].splitlines(), strict=True):
        ours_obj, theirs_obj = json.loads(ours), json.loads(theirs)
        assert ours_obj["threshold"] == theirs_obj["threshold"] == 0.0 and ours_obj["known"] and theirs_obj["known"]


def test_images_over_the_pixel_limit_and_odd_names_are_the_same_lines(fgm_predict, model_dir, images, tmp_path,
                                                                      capsys):
    from image_headers import jpeg_header, png_header
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    limit = Image.MAX_IMAGE_PIXELS
    (folder / "a_40000.png").write_bytes(png_header(40000, 40000))
    (folder / "b_million.png").write_bytes(png_header(1000000, 1000000))
    (folder / "c_over_by_one.png").write_bytes(png_header(limit + 1, 1))
    (folder / "d_65000.jpg").write_bytes(jpeg_header(65000, 65000))
    indexed = Image.fromarray((np.arange(256, dtype=np.uint8).reshape(16, 16) // 16), mode="P")
    indexed.putpalette([v for i in range(256) for v in (i * 16 % 256, 255 - i * 16 % 256, i)])
    indexed.save(folder / "e_palette_trns.png", transparency=bytes([0, 128] + [255] * 254))
    shutil.copy(images.png[1], folder / "f_new\nline\t.png")
    shutil.copy(images.png[2], os.fsdecode(bytes(folder) + b"/g_bad_\xff_utf8.png"))
    (folder / "h_up").symlink_to("..")  # not followed: the folder is listed once
    shutil.copy(images.png[3], folder / "i_good.png")
    for mode in ([], ["--json"]):
        python, native = _both(fgm_predict, capsys, "--model", model_dir, *mode, folder)
        assert python[0] == native[0] == 1 and python[2] == native[2]
        if mode:  # the same JSON lines but for the last digits of a score
            assert [json.loads(line)["path"] for line in python[1].splitlines()] == \
                [json.loads(line)["path"] for line in native[1].splitlines()]
        else:
            assert [line.split(b"\t")[:2] for line in python[1].splitlines()] == \
                [line.split(b"\t")[:2] for line in native[1].splitlines()]
        assert len(python[1].splitlines()) == 4  # the palette PNG, the two odd names, the good one
    problems = python[2]
    assert problems[:4] == [f"{folder}/a_40000.png: image has 1600000000 pixels, more than the limit of {limit} "
                            "(PIL's decompression-bomb limit)",
                            f"{folder}/b_million.png: image has 1000000000000 pixels, more than the limit of "
                            f"{limit} (PIL's decompression-bomb limit)",
                            f"{folder}/c_over_by_one.png: image has {limit + 1} pixels, more than the limit of "
                            f"{limit} (PIL's decompression-bomb limit)",
                            f"{folder}/d_65000.jpg: image has 4225000000 pixels, more than the limit of {limit} "
                            "(PIL's decompression-bomb limit)"]
    text_python, text_native = _both(fgm_predict, capsys, "--model", model_dir, folder)
    paths = [line.split(b"\t")[0] for line in text_native[1].splitlines()]
    assert paths == [f"{folder}/e_palette_trns.png".encode(), f"{folder}/f_new\\nline\\t.png".encode(),
                     f"{folder}/g_bad_\\udcff_utf8.png".encode(), f"{folder}/i_good.png".encode()]


def test_running_out_of_memory_on_one_image_is_its_line_and_the_rest_is_scored(fgm_predict, model_dir, images,
                                                                              tmp_path):
    """Under an address-space cap that a small image fits and a 9000 x 9000 one (324 MB as float32) does
    not, the big image is one problem line and the run goes on (issue 17: std::bad_alloc ended the run)."""
    import resource

    from PIL import Image

    Image.fromarray(np.zeros((9000, 9000), dtype=np.uint8)).save(tmp_path / "big.png", compress_level=1)
    env = {**os.environ, "MALLOC_ARENA_MAX": "1"}  # one malloc arena: the cap is not spent on per-thread ones

    def run(cap_mb: int, *files) -> subprocess.CompletedProcess:
        def limit():
            resource.setrlimit(resource.RLIMIT_AS, (cap_mb << 20, cap_mb << 20))
        return subprocess.run([str(fgm_predict), "--model", str(model_dir), *map(str, files)], capture_output=True,
                              timeout=300, preexec_fn=limit, env=env)

    low, high = 256, 65536  # MiB: the smallest cap a one-image run needs, to 64 MiB
    assert run(high, images.png[0]).returncode == 0
    while high - low > 64:
        middle = (low + high) // 2
        low, high = (low, middle) if run(middle, images.png[0]).returncode == 0 else (middle, high)
    result = run(high + 160, tmp_path / "big.png", images.png[0])
    assert result.returncode == 1, result.stderr
    assert result.stderr.decode().splitlines() == \
        [f"fgm-predict: error: {tmp_path}/big.png: out of memory while decoding or resizing the image"]
    assert result.stdout.decode().startswith(f"{images.png[0]}\t")
