"""One strict JSON reader and one schema checker for every file the tools read back.

config.json, results.json and model.json are written by this project but may be edited, damaged or
hostile when read. Reading them goes through ``read_json_file`` (bounded size, valid UTF-8, no
duplicate keys, no NaN/Infinity literals, bounded nesting) and ``check`` (types, ranges, choices,
finite numbers), so every problem ends as one ``UserError`` line naming the file and the key.

A schema is a dict ``key -> Field``; keys a schema does not name are left alone (older or newer
writers may add keys), and ``Field(required=False)`` may be absent.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastgradmix.common.errors import UserError

MAX_JSON_BYTES = 16 * 1024 * 1024  # far above any file this project writes; bounds memory on a hostile one
MAX_JSON_DEPTH = 64  # deeper nesting than any schema here uses: refused before Python's recursion limit


@dataclass(frozen=True)
class Field:
    """What one key must hold. kind: bool, int, float (ints accepted), str, list, dict."""

    kind: str
    low: float | None = None  # inclusive bounds for int/float, length bounds for str/list
    high: float | None = None
    choices: tuple | None = None
    required: bool = True
    nullable: bool = False
    item: Field | None = None  # lists: every element
    also: tuple = ()  # literal values accepted besides the kind (a split index, or "all")
    above: float | None = None  # exclusive lower bound for int/float (a temperature > 0)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"non-standard number {name}")


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def _depth(text: str) -> int:
    """The deepest [ / { nesting, counted outside strings (cheap, before json.loads can recurse)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def parse_json_text(raw: bytes, label: str) -> Any:
    """Parses bytes strictly; raises UserError('<label>: <why>') on anything but plain, standard JSON."""
    if len(raw) > MAX_JSON_BYTES:
        raise UserError(f"{label}: larger than {MAX_JSON_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{label}: not valid UTF-8 (byte {error.start})") from None
    if _depth(text) > MAX_JSON_DEPTH:
        raise UserError(f"{label}: nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text, object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant)
    except ValueError as error:  # JSONDecodeError is a ValueError; so are the two hooks' refusals
        raise UserError(f"{label}: not valid JSON ({str(error).splitlines()[0]})") from None


def read_json_file(path: Path, label: str | None = None) -> Any:
    """Reads and strictly parses one JSON file; unreadable or invalid -> UserError naming it."""
    label = label or str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_JSON_BYTES + 1)
    except OSError as error:
        raise UserError(f"{label}: cannot read ({error.strerror or error})") from None
    return parse_json_text(raw, label)


def _is_kind(value: Any, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, {"str": str, "list": list, "dict": dict}[kind])


def _check_value(value: Any, field: Field, where: str) -> None:
    if any(value == literal and type(value) is type(literal) for literal in field.also):
        return
    if value is None:
        if field.nullable:
            return
        raise UserError(f"{where}: must be {field.kind}, got null")
    if not _is_kind(value, field.kind):
        raise UserError(f"{where}: must be {field.kind}, got {type(value).__name__} {_short(value)}")
    if field.kind == "float" and not math.isfinite(value):
        raise UserError(f"{where}: must be a finite number, got {value}")
    if field.choices is not None and value not in field.choices:
        raise UserError(f"{where}: must be one of {', '.join(map(str, field.choices))}, got {_short(value)}")
    size = len(value) if field.kind in ("str", "list") else value if field.kind in ("int", "float") else None
    what = "length" if field.kind in ("str", "list") else "value"
    if size is not None and field.low is not None and size < field.low:
        raise UserError(f"{where}: {what} must be >= {field.low}, got {_short(value)}")
    if field.above is not None and field.kind in ("int", "float") and value <= field.above:
        raise UserError(f"{where}: value must be > {field.above}, got {_short(value)}")
    if size is not None and field.high is not None and size > field.high:
        raise UserError(f"{where}: {what} must be <= {field.high}, got {_short(value)}")
    if field.kind == "list" and field.item is not None:
        for index, element in enumerate(value):
            _check_value(element, field.item, f"{where}[{index}]")


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=True) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check(document: Any, schema: dict[str, Field], label: str) -> dict:
    """Checks a parsed JSON object against a schema; returns it, or raises UserError('<label>: <key>: ...')."""
    if not isinstance(document, dict):
        raise UserError(f"{label}: must hold a JSON object, got {type(document).__name__}")
    for key, field in schema.items():
        if key not in document:
            if field.required:
                raise UserError(f"{label}: missing key {key!r}")
            continue
        _check_value(document[key], field, f"{label}: {key}")
    return document


def first_non_finite(value: Any, where: str = "") -> str | None:
    """The key path of the first NaN or infinite float in a JSON-like value ("auroc", "splits[2].auroc"),
    or None when every number is finite (the reader refuses NaN literals, but 1e999 parses as infinity)."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (where or "the value")
    if isinstance(value, dict):
        items = ((f"{where}.{key}" if where else str(key), item) for key, item in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{where}[{index}]", item) for index, item in enumerate(value))
    else:
        return None
    for item_where, item in items:
        found = first_non_finite(item, item_where)
        if found is not None:
            return found
    return None


# ---- additions for readers in other languages (model.json is also read by the C++ predictor) ----------

INT64_RANGE = (-(2**63), 2**63 - 1)  # what a C++ reader holds in an int64


def check_portable(document: Any, label: str) -> Any:
    """Refuses what parse_json_text accepts but a reader in another language would read differently:
    numbers whose literal overflows a double (1e400 parses as inf), integers outside 64 bits, and strings
    or keys holding a lone surrogate (a \\ud800 escape; not text in UTF-8). Raises UserError('<label>: not
    valid JSON (...)') on the first, depth first in file order; returns the document."""
    if isinstance(document, float) and not math.isfinite(document):
        raise UserError(f"{label}: not valid JSON (number out of range)")
    if isinstance(document, int) and not isinstance(document, bool) \
            and not INT64_RANGE[0] <= document <= INT64_RANGE[1]:
        raise UserError(f"{label}: not valid JSON (integer out of 64-bit range)")
    if isinstance(document, str):
        _refuse_lone_surrogates(document, label)
    if isinstance(document, list):
        for element in document:
            check_portable(element, label)
    if isinstance(document, dict):
        for key, value in document.items():
            _refuse_lone_surrogates(key, label)
            check_portable(value, label)
    return document


def _refuse_lone_surrogates(text: str, label: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"{label}: not valid JSON (lone surrogate in a string)") from None


def short_value(value: Any) -> str:
    """A value as check's messages show it: JSON text (ASCII escapes; repr for floats), at most 40 characters."""
    return _short(value)
