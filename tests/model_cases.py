"""Damaged model folders, one per case of issue 17, with the one line both predictors must print.

Each case changes a copy of a valid model folder (the small fake one of test_model_schema.py or the
exported digits model of test_native.py) and names the expected message, a template over {meta}
(model.json's path), {folder} and {bank} (bank.bin's path). test_model_schema.py checks the Python
reader against them; test_native.py checks that both predictors print exactly that line.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelCase:
    name: str
    damage: Callable[[Path], None]
    expected: str  # the whole message after "PROG: error: "


def _edit(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        meta = json.loads((folder / "model.json").read_text())
        change(meta)
        (folder / "model.json").write_text(json.dumps(meta, indent=2))
    return damage


def _raw(replace: Callable[[str], str]) -> Callable[[Path], None]:
    """Edits model.json's text (for what json.dumps cannot write: NaN literals, duplicates, bad bytes)."""
    def damage(folder: Path) -> None:
        text = json.dumps(json.loads((folder / "model.json").read_text()), indent=2)
        (folder / "model.json").write_bytes(replace(text).encode("utf-8", "surrogateescape"))
    return damage


def _set(section: str, key: str, value) -> Callable[[Path], None]:
    return _edit(lambda meta: meta[section].__setitem__(key, value))


def _set_raw(key: str, literal: str) -> Callable[[Path], None]:
    """Sets the first occurrence of "key": <value> to a literal JSON text."""
    def replace(text: str) -> str:
        start = text.index(f'"{key}": ') + len(key) + 4
        end = min(i for i in (text.find(",\n", start), text.find("\n", start)) if i >= 0)
        return text[:start] + literal + text[end:]
    return _raw(replace)


def _bank_value(offset_of: Callable[[int, int], int], fmt: str, value) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        data = bytearray((folder / "bank.bin").read_bytes())
        rows, dim = struct.unpack_from("<II", data, 8)
        struct.pack_into(fmt, data, offset_of(rows, dim), value)
        (folder / "bank.bin").write_bytes(bytes(data))
    return damage


def _link_program_outside(folder: Path) -> None:
    outside = folder.parent / f"{folder.name}-outside.pt2"
    (folder / "model.cpu.pt2").rename(outside)
    (folder / "model.cpu.pt2").symlink_to(outside)


CASES = [
    # 1. unbounded memory from one number
    ModelCase("image_size 60000", _set("preprocessing", "image_size", 60000),
              "{meta}: preprocessing: image_size: value must be <= 1024, got 60000"),
    # 3. tracebacks on damaged folders
    ModelCase("deeply nested JSON", lambda f: (f / "model.json").write_text("[" * 100000 + "]" * 100000),
              "{meta}: nested deeper than 64 levels"),
    ModelCase("image_size 1e23", _set_raw("image_size", "1e23"),
              "{meta}: preprocessing: image_size: must be int, got float 1e+23"),
    ModelCase("image_size 2147483647", _set("preprocessing", "image_size", 2147483647),
              "{meta}: preprocessing: image_size: value must be <= 1024, got 2147483647"),
    ModelCase("lone surrogate in a class name",
              _raw(lambda t: t.replace('"class_names": [\n    "', '"class_names": [\n    "\\ud800', 1)),
              "{meta}: not valid JSON (lone surrogate in a string)"),
    ModelCase("channels 3, one mean", _set("preprocessing", "channels", 3),
              "{meta}: preprocessing: mean and std must hold one value per channel (3), got 1 and 1"),
    # 4. silent acceptance of NaN
    ModelCase("NaN in mean", _set_raw("mean", "[NaN]"), "{meta}: not valid JSON (non-standard number NaN)"),
    ModelCase("NaN in the bank", _bank_value(lambda rows, dim: 24 + 4 * (dim + 1), "<f", float("nan")),
              "{bank} is corrupt: feature row 1 is not finite or not L2-normalised; export the model again"),
    ModelCase("label out of range", _bank_value(lambda rows, dim: 24 + 4 * rows * dim, "<i", -1),
              "{bank} is corrupt: labels outside [0, {classes}); export the model again"),
    # 5. disagreements
    ModelCase("duplicate keys", _raw(lambda t: t.replace('"topk": ', '"topk": 3, "topk": ', 1)),
              "{meta}: not valid JSON (duplicate key 'topk')"),
    ModelCase("invalid UTF-8 in model.json", _raw(lambda t: t.replace('"format": "', '"format": "\udcff', 1)),
              "{meta}: not valid UTF-8 (byte 15)"),
    ModelCase("std 1e-50", _set("preprocessing", "std", [1e-50]),
              "{meta}: preprocessing: std[0]: value must be >= 1e-06, got 1e-50"),
    ModelCase("topk 4294967297", _set("scoring", "topk", 4294967297),
              "{meta}: scoring: topk: value must be <= 2147483647, got 4294967297"),
    ModelCase("threshold 1e400", _set_raw("threshold", "1e400"), "{meta}: not valid JSON (number out of range)"),
    ModelCase("integer beyond 64 bits", _set_raw("size", "9223372036854775808"),
              "{meta}: not valid JSON (integer out of 64-bit range)"),
    ModelCase("byte-order mark", _raw(lambda t: "\ufeff" + t),
              "{meta}: not valid JSON (Unexpected UTF-8 BOM (decode using utf-8-sig): line 1 column 1 (char 0))"),
    ModelCase("newline in a class name", _edit(lambda m: m["class_names"].__setitem__(0, "a\nb")),
              '{meta}: class_names[0]: must not hold control characters, got "a\\nb"'),
    # 6. paths out of the model folder
    ModelCase("program ../other", _edit(lambda m: m["programs"].__setitem__("cpu", "../other/model.cpu.pt2")),
              '{meta}: programs: cpu: must be a file name inside the model folder, got "../other/model.cpu.pt2"'),
    ModelCase("program /etc/passwd", _edit(lambda m: m["programs"].__setitem__("cpu", "/etc/passwd")),
              '{meta}: programs: cpu: must be a file name inside the model folder, got "/etc/passwd"'),
    ModelCase("bank ../bank.bin", _set("bank", "file", "../bank.bin"),
              '{meta}: bank: file: must be a file name inside the model folder, got "../bank.bin"'),
    ModelCase("program linked from outside", _link_program_outside,
              "{folder}/model.cpu.pt2 is a link to a file outside the model folder; export the model again"),
    # and the older checks, now in the same words from both
    ModelCase("format version 2", _edit(lambda m: m.__setitem__("format_version", 2)),
              "{meta} has format version 2; the predictors read version 1: export the model again"),
    ModelCase("bank size differs", _edit(lambda m: m["bank"].__setitem__("size", m["bank"]["size"] + 1)),
              "{bank} does not match model.json (classes, size or feature_dim differ); export the model again"),
    ModelCase("missing key", _edit(lambda m: m["scoring"].pop("threshold")),
              "{meta}: scoring: missing key 'threshold'"),
    ModelCase("tpr as text", _set("scoring", "tpr", "high"), '{meta}: scoring: tpr: must be float, got str "high"'),
]


def expected_message(case: ModelCase, folder: Path, printable) -> str:
    classes = len(json.loads((folder / "model.json").read_text(errors="replace"))["class_names"]) \
        if "{classes}" in case.expected else 0
    return case.expected.format(meta=printable(folder / "model.json"), folder=printable(folder),
                                bank=printable(folder / "bank.bin"), classes=classes)
