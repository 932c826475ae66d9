"""The protocol registry: a name and a split index in, an OpenSetData out."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import UserError
from .digits import load_digits_protocol
from .openset import OpenSetData

# name -> loader(split, image_size, data_root)
PROTOCOLS: dict[str, Callable[[int, int, str], OpenSetData]] = {
    "digits": lambda split, image_size, data_root: load_digits_protocol(split, image_size),
}


def build_protocol(name: str, split: int, image_size: int, data_root: str) -> OpenSetData:
    if name not in PROTOCOLS:
        raise UserError(f"unknown protocol {name!r}: choose one of {', '.join(sorted(PROTOCOLS))}")
    return PROTOCOLS[name](split, image_size, data_root)
