"""The five standard known/unknown class splits (Neal et al. 2018), shipped inside the package."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from fastgradmix.common.errors import UserError


@lru_cache(maxsize=1)
def load_splits() -> dict:
    with resources.files(__package__).joinpath("osr_splits.json").open() as handle:
        return json.load(handle)


def known_classes(protocol_key: str, split: int) -> list[int]:
    """Canonical class indices of the known classes of ``split`` for a protocol family."""
    lists = load_splits()[protocol_key]["known"]
    if not 0 <= split < len(lists):
        raise UserError(f"split {split} is out of range for {protocol_key}: choose 0..{len(lists) - 1}")
    return list(lists[split])
