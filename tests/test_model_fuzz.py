"""A seeded fuzz test of the model folder: hundreds of damaged model.json and bank.bin files, each given
to ``python -m fastgradmix.predict`` and to the native ``fgm-predict`` with the same images.

Neither may crash (a traceback, a signal, an exit code other than 0/1/2) or pass a memory cap
(RLIMIT_AS, set in each child), and both must answer alike: the same exit code, the same stdout lines
(scores within 1e-5 or 1e-6 relative: the two sum the top-k similarities in different orders) and the same stderr lines
once the program name is set aside, except that for a file that is not JSON only the words up to
"not valid JSON (" must agree (the parsers' own diagnostics of a syntax error differ). Marked slow: 200
runs of each predictor, the native one a process each (libtorch's start-up, about 0.4 s of CPU).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import resource
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from deploy_helpers import digit_images, exported_model
from native_build import native_program

pytestmark = [pytest.mark.native, pytest.mark.slow]

SEED = 17
MUTATIONS = 200
MEMORY_CAP = 6 * 2**30  # bytes of address space per predictor: torch maps ~4 GiB; an image_size of 60000 asks for 24 GB
HERE = Path(__file__).resolve().parent
SENTINEL = "\u0000fuzz\u0000"

# model.json paths a mutation may touch (list indices as ints)
PATHS = [("format",), ("format_version",), ("class_names",), ("class_names", 0), ("class_names", 5),
         ("preprocessing",), ("preprocessing", "image_size"), ("preprocessing", "channels"), ("preprocessing", "mean"),
         ("preprocessing", "mean", 0), ("preprocessing", "std"), ("preprocessing", "std", 0), ("scoring",),
         ("scoring", "topk"), ("scoring", "threshold"), ("scoring", "tpr"), ("bank",), ("bank", "file"),
         ("bank", "size"), ("bank", "feature_dim"), ("programs",), ("programs", "cpu")]
# JSON texts a value may become: limits and just past them, wrong types, non-standard and overflowing numbers
VALUES = ["0", "-1", "1", "2", "3", "16", "17", "1024", "1025", "60000", "2147483647", "2147483648", "4294967297",
          "9223372036854775807", "9223372036854775808", "-9223372036854775809", "1" + "0" * 30, "1e23", "1.0",
          "0.0", "-0.0", "0.5", "1.5", "1e-50", "1e-400", "1e400", "-1e400", "NaN", "Infinity", "1e-6", "1e6",
          "true", "false", "null", '""', '"x"', '"bank.bin"', '"model.cpu.pt2"', '"../model.cpu.pt2"',
          '"/etc/passwd"', '"."', '"a/b"', '"a\\u0000b"', '"tab\\there"', '"new\\nline"', '"\\ud800"',
          '"d\\u00efgit \\u2713"', '"' + "x" * 300 + '"', "[]", "[0.5]", "[0.5, 0.5, 0.5]", "[0.5, NaN]",
          "[1e-50]", '["a"]', "{}", '{"cpu": "model.cpu.pt2"}', "[" * 70 + "]" * 70]
# values a valid model can take: the run must then score the images
VALID = {("scoring", "threshold"): ["-1e300", "0", "1e-400", "9.5", "10.5", "1e300", "7"],
         ("scoring", "topk"): ["1", "2", "5", "754", "2147483647"],
         ("scoring", "tpr"): ["0", "1", "0.5"],
         ("class_names", 0): ['"d\\u00efgit \\u2713"', '"emoji \\ud83d\\ude42"', '"unknown"', '"a b"'],
         ("preprocessing", "std", 0): ["1e-6", "1e6", "0.25"], ("preprocessing", "mean", 0): ["0", "1", "0.25"]}


@dataclass
class Mutation:
    name: str
    meta: bytes
    bank: bytes


def _set(document, path, value):
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


def _with_value(meta: dict, path: tuple, text: str) -> bytes:
    document = json.loads(json.dumps(meta))
    _set(document, path, SENTINEL)
    return json.dumps(document, indent=2).replace(json.dumps(SENTINEL), text).encode("utf-8", "surrogatepass")


def _without_key(meta: dict, path: tuple) -> bytes:
    document = json.loads(json.dumps(meta))
    target = document
    for key in path[:-1]:
        target = target[key]
    if isinstance(target, dict):
        del target[path[-1]]
    else:
        target.pop(path[-1])
    return json.dumps(document, indent=2).encode()


def _bytes_mutation(rng: random.Random, text: bytes) -> tuple[str, bytes]:
    data = bytearray(text)
    kind = rng.choice(["flip", "insert", "delete", "truncate", "duplicate"])
    at = rng.randrange(len(data))
    if kind == "flip":
        data[at] = rng.choice([0x00, 0x0A, 0x22, 0x5C, 0x7B, 0x7D, 0x80, 0xC0, 0xED, 0xF5, 0xFF, rng.randrange(256)])
    elif kind == "insert":
        data[at:at] = rng.choice([b"\xef\xbb\xbf", b"\xff", b"\xf5\x80\x80", b"\xed\xa0\x80", b",", b"]", b"\x00",
                                  b"\xc3\xa9", b"NaN", b"-", b'"'])
    elif kind == "delete":
        del data[at:at + rng.randrange(1, 40)]
    elif kind == "truncate":
        del data[at:]
    else:
        span = data[at:at + rng.randrange(1, 60)]
        data[at:at] = span
    return f"bytes-{kind}@{at}", bytes(data)


def _bank_mutation(rng: random.Random, bank: bytes, rows: int, dim: int) -> tuple[str, bytes]:
    data = bytearray(bank)
    kind = rng.choice(["header", "magic", "truncate", "append", "nan", "inf", "huge", "zero_row", "label", "flip"])
    features, labels = 24, 24 + 4 * rows * dim
    row = rng.randrange(rows)
    if kind == "header":
        field = rng.choice([8, 12, 16, 20])
        struct.pack_into("<I", data, field, rng.choice([0, 1, 5, 6, 7, 127, 129, 753, 755, 2**31, 2**32 - 1]))
    elif kind == "magic":
        data[rng.randrange(8)] ^= 0x20
    elif kind == "truncate":
        del data[rng.choice([0, 10, 23, 24, labels, len(data) - 1]):]
    elif kind == "append":
        data += bytes(rng.choice([1, 4, 132]))
    elif kind in ("nan", "inf", "huge"):
        value = {"nan": float("nan"), "inf": float("inf"), "huge": 1e30}[kind]
        struct.pack_into("<f", data, features + 4 * (row * dim + rng.randrange(dim)), value)
    elif kind == "zero_row":
        data[features + 4 * row * dim:features + 4 * (row + 1) * dim] = bytes(4 * dim)
    elif kind == "label":
        struct.pack_into("<i", data, labels + 4 * row, rng.choice([-1, 6, 2**31 - 1]))
    else:
        at = rng.randrange(24, len(data))
        data[at] ^= 1 << rng.randrange(8)
    return f"bank-{kind}@{row}", bytes(data)


def make_mutations(meta: dict, bank: bytes, count: int, seed: int) -> list[Mutation]:
    """``count`` seeded mutations of a valid model folder's model.json and bank.bin."""
    rng = random.Random(seed)
    original = json.dumps(meta, indent=2).encode()
    rows, dim = struct.unpack_from("<II", bank, 8)
    found = []
    while len(found) < count:
        family = rng.choices(["value", "valid", "delete", "duplicate", "bytes", "bank"], [40, 10, 7, 5, 20, 18])[0]
        if family == "value":
            path, text = rng.choice(PATHS), rng.choice(VALUES)
            found.append(Mutation(f"{'.'.join(map(str, path))}={text[:20]}", _with_value(meta, path, text), bank))
        elif family == "valid":
            path = rng.choice(list(VALID))
            text = rng.choice(VALID[path])
            found.append(Mutation(f"valid {'.'.join(map(str, path))}={text}", _with_value(meta, path, text), bank))
        elif family == "delete":
            path = rng.choice(PATHS)
            found.append(Mutation(f"delete {'.'.join(map(str, path))}", _without_key(meta, path), bank))
        elif family == "duplicate":
            key = rng.choice([b'"topk"', b'"format"', b'"image_size"', b'"file"', b'"cpu"'])
            text = original.replace(key + b":", key + b": 3, " + key + b":", 1)
            found.append(Mutation(f"duplicate {key.decode()}", text, bank))
        elif family == "bytes":
            name, text = _bytes_mutation(rng, original)
            found.append(Mutation(name, text, bank))
        else:
            name, data = _bank_mutation(rng, bank, rows, dim)
            found.append(Mutation(name, original, data))
    return found


# ---- running both predictors ----------------------------------------------------------------------------


class PythonPredictor:
    """tests/predict_worker.py: fastgradmix.predict's main(), one process for every run, under the cap."""

    def __init__(self, memory_cap: int):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)])}
        self.process = subprocess.Popen([sys.executable, str(HERE / "predict_worker.py"), str(memory_cap)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert self.process.stdout.readline().strip() == "ready"

    def run(self, args: list[str]) -> tuple[object, bytes, bytes]:
        self.process.stdin.write(json.dumps(args) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:  # the worker died (a signal, the cap): that is a crash
            return f"died {self.process.wait()}", b"", b""
        answer = json.loads(line)
        return answer["code"], answer["out"].encode("utf-8", "surrogateescape"), \
            answer["err"].encode("utf-8", "surrogateescape")

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def _cap_memory(memory_cap: int):
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (memory_cap, memory_cap))


def start_native(program: Path, args: list[str], memory_cap: int) -> subprocess.Popen:
    return subprocess.Popen([str(program), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_cap_memory(memory_cap))


def finish_native(process: subprocess.Popen) -> tuple[int, bytes, bytes]:
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


_SCORE = re.compile(rb"score=(-?[0-9.]+|nan|inf|-inf)")


def _same_stdout(ours: bytes, theirs: bytes) -> bool:
    """Equal lines, the scores within 1e-5 or one part in a million (a float32 sum of up to k similarities,
    added in another order: with k = 754 two sums of about 124 differ by 2e-5)."""
    ours_lines, theirs_lines = ours.splitlines(), theirs.splitlines()
    if len(ours_lines) != len(theirs_lines):
        return False
    for mine, other in zip(ours_lines, theirs_lines, strict=True):
        mine_score, other_score = _SCORE.search(mine), _SCORE.search(other)
        if mine_score is None or other_score is None:
            if mine != other:
                return False
            continue
        if _SCORE.sub(b"", mine) != _SCORE.sub(b"", other) or not math.isclose(
                float(mine_score.group(1)), float(other_score.group(1)), rel_tol=1e-6, abs_tol=1e-5):
            return False
    return True


def _problem_lines(stderr: bytes, prog: bytes) -> list[bytes]:
    lines = []
    for line in stderr.splitlines():
        assert line.startswith(prog + b": error: "), line
        line = line[len(prog) + 9:]
        cut = line.find(b": not valid JSON (")
        lines.append(line[:cut + 18] if cut >= 0 else line)
    return lines


def compare(python: tuple, native: tuple) -> str | None:
    """None when the two runs agree (see the module docstring), else what differs."""
    (py_code, py_out, py_err), (cc_code, cc_out, cc_err) = python, native
    if py_code not in (0, 1, 2) or cc_code not in (0, 1, 2):
        return f"crash: python {py_code} {py_err[-800:]!r}, native {cc_code} {cc_err[-800:]!r}"
    if b"Traceback" in py_err:
        return f"traceback: {py_err[-800:]!r}"
    if py_code != cc_code:
        return f"exit codes differ: python {py_code} {py_err!r}, native {cc_code} {cc_err!r}"
    if not _same_stdout(py_out, cc_out):
        return f"stdout differs: python {py_out!r}, native {cc_out!r}"
    if _problem_lines(py_err, b"fastgradmix.predict") != _problem_lines(cc_err, b"fgm-predict"):
        return f"stderr differs: python {py_err!r}, native {cc_err!r}"
    return None


def fuzz(model_dir: Path, program: Path, images: list[str], work: Path, count: int = MUTATIONS,
         seed: int = SEED) -> tuple[list[tuple[str, str]], dict]:
    """Runs every mutation through both predictors; returns the disagreements and a tally of exit codes."""
    meta = json.loads((model_dir / "model.json").read_text())
    bank = (model_dir / "bank.bin").read_bytes()
    python = PythonPredictor(MEMORY_CAP)
    failures, tally = [], {}
    try:
        for index, mutation in enumerate(make_mutations(meta, bank, count, seed)):
            folder = work / f"m{index:03d}"
            folder.mkdir(parents=True)
            (folder / "model.json").write_bytes(mutation.meta)
            (folder / "bank.bin").write_bytes(mutation.bank)
            try:
                os.link(model_dir / "model.cpu.pt2", folder / "model.cpu.pt2")
            except OSError:
                shutil.copy(model_dir / "model.cpu.pt2", folder / "model.cpu.pt2")
            args = ["--model", str(folder), *images]
            native = start_native(program, args, MEMORY_CAP)  # the two run side by side
            python_answer = python.run(args)
            native_answer = finish_native(native)
            problem = compare(python_answer, native_answer)
            if problem is not None:
                failures.append((mutation.name, problem))
            tally[python_answer[0]] = tally.get(python_answer[0], 0) + 1
            shutil.rmtree(folder)
    finally:
        python.close()
    return failures, tally


@pytest.fixture(scope="module")
def fgm_predict(tmp_path_factory) -> Path:
    return native_program(tmp_path_factory)


def test_mutations_are_valid_json_for_the_most_part():
    """The generator itself: seeded (the same list twice) and mostly reaching the schema, not only the parser."""
    meta = {"format": "fastgradmix-model", "format_version": 1, "class_names": list("abcdef"),
            "preprocessing": {"image_size": 16, "channels": 1, "mean": [0.5], "std": [0.5]},
            "scoring": {"topk": 10, "threshold": 9.7, "tpr": 0.95},
            "bank": {"file": "bank.bin", "size": 2, "feature_dim": 2}, "programs": {"cpu": "model.cpu.pt2"}}
    bank = b"FGMBANK1" + struct.pack("<4I", 2, 2, 6, 0) + np.eye(2, dtype="<f4").tobytes() + bytes(8)
    first, second = make_mutations(meta, bank, 200, SEED), make_mutations(meta, bank, 200, SEED)
    assert [(m.name, m.meta, m.bank) for m in first] == [(m.name, m.meta, m.bank) for m in second]
    parsed = 0
    for mutation in first:
        try:
            json.loads(mutation.meta)
            parsed += 1
        except ValueError:
            pass
    assert parsed >= 120 and len({m.name for m in first}) >= 100


def test_both_predictors_survive_and_agree_on_damaged_model_folders(fgm_predict, tmp_path_factory, tmp_path):
    model_dir = exported_model(tmp_path_factory)
    images = digit_images(tmp_path_factory)
    (tmp_path / "text.png").write_text("not an image")
    inputs = [str(images.png[0]), str(images.png[400]), str(images.jpeg[0]), str(tmp_path / "text.png")]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    failures, tally = fuzz(model_dir, fgm_predict, inputs, tmp_path / "work")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(f"{MUTATIONS} mutations (seed {SEED}), exit codes {tally}, {cpu:.0f} s of CPU in the predictors")
    assert not failures, f"{len(failures)} of {MUTATIONS} mutations disagree or crash: {failures[:5]}"
    assert tally.get(1, 0) >= 10 and tally.get(2, 0) >= 100  # both outcomes reached: scored and refused
