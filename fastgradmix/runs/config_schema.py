"""config.json's schema, generated from the option table (``runs.config.Config``): every option's key with
its type, choices and low/high bounds, finite numbers only, never null. A key may be missing (a file
written before its option existed: the option's default applies). A new option is covered the moment it is
added to the table; keys the table does not know (an older or newer writer's) are left alone.

A run's config.json is read back by --resume, --split all, evaluate and export; a damaged or edited one
ends as one line naming the file and the key (``runs.folder.read_saved_config``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fastgradmix.common.schema import Field, check
from fastgradmix.runs.config import Config, split_value

_INT64 = (-(2**63), 2**63 - 1)  # every integer option fits torch's int64, whatever its own bounds


def option_field(option: dataclasses.Field) -> Field:
    """The schema Field of one Config option (its type, choices, bounds; required, not null)."""
    meta = option.metadata
    # `from __future__ import annotations` makes types strings; "bool | None" is a switch whose default (None)
    # follows another option (--channels-last follows --precision): training records it resolved, and null
    # reads back as "follow" (runs/precision.py resolves it the same way)
    kind = {"int": "int", "float": "float", "str": "str", "bool": "bool", "bool | None": "bool"}[option.type]
    nullable = option.type.endswith("| None")
    low, high = meta.get("low"), meta.get("high")
    if kind == "int":
        low = _INT64[0] if low is None else low
        high = _INT64[1] if high is None else high
    also = ("all",) if meta.get("parse") is split_value else ()
    # not required: a config.json written before an option existed gets the option's default
    return Field(kind, low=low, high=high, choices=meta.get("choices"), also=also, above=meta.get("above"),
                 required=False, nullable=nullable)


def config_schema() -> dict[str, Field]:
    return {option.name: option_field(option) for option in dataclasses.fields(Config)}


def check_config(document: Any, label: str) -> dict[str, Any]:
    """A parsed config.json checked against the option table; returns it, or raises UserError('<label>: ...')."""
    return check(document, config_schema(), label)
