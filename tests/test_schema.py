"""The strict JSON reader and schema checker: what standard JSON parses equally, what is refused in one line."""

import json

import pytest

from fastgradmix.common.errors import UserError
from fastgradmix.common.schema import MAX_JSON_DEPTH, Field, check, parse_json_text, read_json_file

SCHEMA = {"width": Field("int", low=1, high=4096), "lr": Field("float", low=0.0), "name": Field("str", high=8),
          "mode": Field("str", choices=("a", "b")), "amp": Field("bool"), "sizes": Field("list", item=Field("int")),
          "note": Field("str", required=False, nullable=True)}
GOOD = {"width": 16, "lr": 1, "name": "x", "mode": "a", "amp": False, "sizes": [1, 2], "extra": {"kept": True}}


def test_plain_json_parses_as_the_standard_library_does(tmp_path):
    text = json.dumps({"a": [1, 2.5, "é", None, {"b": True}], "c": "\u2603"})
    (tmp_path / "f.json").write_text(text, encoding="utf-8")
    assert read_json_file(tmp_path / "f.json") == json.loads(text)


@pytest.mark.parametrize("raw, why", [
    (b'{"a": 1, "a": 2}', "duplicate key 'a'"),
    (b'{"a": NaN}', "non-standard number NaN"),
    (b'{"a": Infinity}', "non-standard number Infinity"),
    (b'{"a": "\xff"}', "not valid UTF-8"),
    (b'{"a": ', "not valid JSON"),
    (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), "nested deeper"),
    (b"[" * 100000, "nested deeper"),
])
def test_damaged_json_is_one_line(raw, why):
    with pytest.raises(UserError) as caught:
        parse_json_text(raw, "model.json")
    message = str(caught.value)
    assert message.startswith("model.json: ") and why in message and "\n" not in message


def test_brackets_inside_strings_do_not_count_as_nesting():
    assert parse_json_text(json.dumps({"a": "[" * 1000}).encode(), "f") == {"a": "[" * 1000}


def test_a_good_document_passes_and_unknown_keys_are_kept():
    assert check(dict(GOOD), SCHEMA, "config.json") == GOOD


@pytest.mark.parametrize("key, value, why", [
    ("width", "sixteen", "width: must be int, got str"),
    ("width", True, "width: must be int, got bool"),
    ("width", 1.0, "width: must be int, got float"),
    ("width", 0, "width: value must be >= 1"),
    ("width", 5000, "width: value must be <= 4096"),
    ("width", None, "width: must be int, got null"),
    ("lr", -1.0, "lr: value must be >= 0.0"),
    ("lr", float("inf"), "lr: must be a finite number"),
    ("name", "123456789", "name: length must be <= 8"),
    ("mode", "c", "mode: must be one of a, b"),
    ("sizes", [1, "2"], "sizes[1]: must be int, got str"),
])
def test_each_wrong_value_names_its_key(key, value, why):
    document = dict(GOOD, **{key: value})
    with pytest.raises(UserError, match="^config.json: " + why.replace("[", r"\[").replace("]", r"\]")):
        check(document, SCHEMA, "config.json")


def test_missing_required_key_and_optional_null():
    with pytest.raises(UserError, match="missing key 'amp'"):
        check({k: v for k, v in GOOD.items() if k != "amp"}, SCHEMA, "c")
    assert check(dict(GOOD, note=None), SCHEMA, "c")["note"] is None
    with pytest.raises(UserError, match="must hold a JSON object, got list"):
        check([1], SCHEMA, "c")
