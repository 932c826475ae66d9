"""Writes (or, with --check, verifies) the generated tables of docs/FIDELITY.md from fastgradmix/runs/fidelity.py.

    python tools/fidelity_doc.py           # rewrite the tables between the markers
    python tools/fidelity_doc.py --check   # exit 1 when the file is not what the presets render

Only the text between ``<!-- generated: NAME -->`` and ``<!-- end generated: NAME -->`` is generated; the
rest of the document is written by hand.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from fastgradmix.common.files import write_text
from fastgradmix.runs.fidelity import render_choices, render_protocols

DOC = Path(__file__).resolve().parents[1] / "docs" / "FIDELITY.md"
BLOCKS = {"choices": render_choices, "protocols": render_protocols}


def rendered(text: str) -> str:
    """``text`` with every generated block replaced by what the presets render now."""
    for name, render in BLOCKS.items():
        pattern = re.compile(rf"(<!-- generated: {name} -->\n).*?(<!-- end generated: {name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"{DOC}: no <!-- generated: {name} --> ... <!-- end generated: {name} --> block")
        text = pattern.sub(lambda match, render=render: match.group(1) + render() + match.group(2), text)
    return text


def main(argv: list[str]) -> int:
    text = DOC.read_text()
    fresh = rendered(text)
    if "--check" in argv:
        if fresh != text:
            print(f"{DOC} differs from what fastgradmix/runs/presets.py renders; run python tools/fidelity_doc.py",
                  file=sys.stderr)
            return 1
        return 0
    if fresh != text:
        write_text(DOC, fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
