"""Record, then compare, the outputs a refactor must leave bit-identical (CPU, fixed seed).

    python tools/same_numbers.py record DIR     # runs the commands below into DIR
    python tools/same_numbers.py compare A B    # every tensor and every non-timing number equal

The commands: the default digits run; a MoCo + GradMix run; a CutMix run; `evaluate --tasks all` on the
default run; an export of the default run (its class bank and threshold). Wall times, paths and other
run-dependent strings are ignored; everything else must match exactly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

# each entry: (name, argv after `python -m`); {d} is the record folder
COMMANDS = [
    ("default", ["fastgradmix.train", "--out", "{d}/default", "--no-progress", "--device", "cpu"]),
    ("moco", ["fastgradmix.train", "--method", "moco", "--aug", "gradmix", "--epochs", "3", "--out", "{d}/moco",
              "--no-progress", "--device", "cpu"]),
    ("cutmix", ["fastgradmix.train", "--aug", "cutmix", "--epochs", "3", "--out", "{d}/cutmix", "--no-progress",
                "--device", "cpu"]),
    ("evaluate", ["fastgradmix.evaluate", "--run", "{d}/default", "--tasks", "all", "--no-progress",
                  "--device", "cpu"]),
    ("export", ["fastgradmix.export", "--run", "{d}/default", "--out", "{d}/model", "--no-progress",
                "--device", "cpu"]),
]

# keys whose values are timings or machine/path facts, not results
IGNORED_KEYS = {"wall_s", "train_s", "eval_s", "seconds", "time_s", "images_per_s", "step_ms", "run", "path",
                "out", "data_root", "created", "date", "torch", "hostname", "versions", "elapsed_s",
                "evaluated_at", "max_error_vs_eager"}  # the last: the AOTInductor program's own compile noise


def record(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, argv in COMMANDS:
        argv = [a.replace("{d}", str(folder)) for a in argv]
        print(f"== {name}: python -m {' '.join(argv)}", flush=True)
        subprocess.run([sys.executable, "-m", *argv], check=True)


def _json_diff(a, b, where: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key in IGNORED_KEYS or key.endswith("_s") or "time" in key:
                continue
            if key not in a or key not in b:
                out.append(f"{where}.{key}: only in {'B' if key not in a else 'A'}")
                continue
            _json_diff(a[key], b[key], f"{where}.{key}", out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _json_diff(x, y, f"{where}[{i}]", out)
    elif isinstance(a, str) and isinstance(b, str) and ("/" in a or "/" in b):
        return  # paths differ between record folders
    elif a != b and not (a != a and b != b):  # NaN == NaN here
        out.append(f"{where}: {a!r} != {b!r}")


def _tensor_diff(a, b, where: str, out: list[str]) -> None:
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype or not torch.equal(a, b):
            out.append(f"{where}: tensors differ")
    elif isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                out.append(f"{where}.{key}: only in one")
            else:
                _tensor_diff(a[key], b[key], f"{where}.{key}", out)
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _tensor_diff(x, y, f"{where}[{i}]", out)
    elif isinstance(a, str) and isinstance(b, str) and ("/" in a or "/" in b):
        return
    elif isinstance(a, float) and isinstance(b, float) and where.endswith("_s"):
        return  # wall times
    elif a != b and not (a != a and b != b):
        out.append(f"{where}: {a!r} != {b!r}")


def compare(a: Path, b: Path) -> int:
    problems: list[str] = []
    checked = 0
    for path_a in sorted(a.rglob("*")):
        rel = path_a.relative_to(a)
        path_b = b / rel
        if path_a.is_dir() or rel.suffix in {".png", ".md", ".jsonl", ".pt2", ".log"} or "feature_cache" in rel.parts:
            continue
        if not path_b.exists():
            problems.append(f"{rel}: missing in B")
            continue
        if rel.suffix == ".json":
            _json_diff(json.loads(path_a.read_text()), json.loads(path_b.read_text()), str(rel), problems)
        elif rel.suffix == ".pt":
            _tensor_diff(torch.load(path_a, map_location="cpu", weights_only=False),
                         torch.load(path_b, map_location="cpu", weights_only=False), str(rel), problems)
        elif path_a.read_bytes() != path_b.read_bytes():
            problems.append(f"{rel}: bytes differ")
        checked += 1
    for line in problems:
        print(line)
    print(f"compared {checked} files: {'identical' if not problems else f'{len(problems)} differences'}")
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "record":
        record(Path(sys.argv[2]).resolve())
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
    else:
        sys.exit(__doc__)
