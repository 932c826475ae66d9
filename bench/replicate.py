"""Does GradMix help? One table: GradMix against training without a mixed view against the cross-entropy baseline,
same data, same epochs, same budget, one command.

    python bench/replicate.py --preset gpu --data-root DIR          # the GPU kit: CIFAR-10 split 0, ~8 minutes
    python bench/replicate.py --preset cpu --data-root DIR          # the README's CPU table (2 cores, about an hour)
    python bench/replicate.py --preset dry                          # seconds on a CPU: checks the kit works
    python bench/replicate.py --preset gpu --data-root DIR --unpack-from ../shared/data   # unpack CIFAR-10 first

Rows (``--runs``): ``gradmix`` (--aug gradmix), ``none`` (--aug none), ``ce`` (--method ce, scored by its maximum
softmax probability, and again by Algorithm 1's top-k similarity on its features: the ``ce (top-k)`` row),
``gradmix-official`` (--preset official: the published code's step, scoring and schedule). Each run is a separate
``python -m fastgradmix.train`` process (its wall time is the process's, evaluation included) in
``<out>/<row>/``; a finished run is not trained again (delete its folder to redo it). The table (AUROC and
closed-set accuracy of the known vs unknown test classes, training and total wall time) goes to stdout and to
``<out>/table.md`` and ``table.json``. One seed per row: differences smaller than a seed-to-seed spread (about
0.01 AUROC on the digits ablation) are not evidence.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from fastgradmix.common.files import write_json, write_text

# the settings of each preset: the data, the model and the budget every row shares
PRESETS = {
    # one lent GPU, three rows in about 8 minutes: a full-width ResNet-18, bf16, channels-last
    "gpu": dict(protocol="cifar10", epochs=15, extra=["--amp", "--channels-last", "--batch-size", "256",
                                                      "--eval-batch-size", "1024"]),
    # the README's CPU table on 2 cores: a quarter-width ResNet-18, bf16 autocast, channels-last; timed on the
    # 2-core Zen 4 machine at about 0.65-0.7 s per GradMix step (117 steps per epoch), so 12 epochs keep the
    # slowest row (GradMix) under about 20 minutes
    "cpu": dict(protocol="cifar10", epochs=12, extra=["--width", "16", "--amp", "--channels-last", "--batch-size",
                                                     "256", "--eval-batch-size", "1024", "--device", "cpu"]),
    # seconds on a CPU: the bundled digits, a tiny model, one epoch on a small subset (CI runs it)
    "dry": dict(protocol="digits", epochs=1, extra=["--width", "4", "--batch-size", "64", "--train-subset", "128",
                                                    "--eval-batch-size", "512", "--device", "cpu", "--loader",
                                                    "device"]),
}
ROWS = {
    "gradmix": ["--aug", "gradmix"],
    "none": ["--aug", "none"],
    "ce": ["--method", "ce", "--aug", "none", "--score", "msp"],
    "gradmix-official": ["--aug", "gradmix", "--preset", "official"],
}


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:  # everything after -- goes to every run's fastgradmix.train
        extra, argv = argv[argv.index("--") + 1:], argv[:argv.index("--")]
    parser = argparse.ArgumentParser(prog="bench/replicate.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=tuple(PRESETS), default="gpu")
    parser.add_argument("--data-root", default="", help="dataset folder holding cifar10-jpeg/ (not for dry)")
    parser.add_argument("--unpack-from", default="", help="a folder with unpack.sh (../shared/data): unpack "
                        "CIFAR-10 into --data-root first when it is missing there")
    parser.add_argument("--split", default="0", help="the class split, or all (the five-split replication)")
    parser.add_argument("--epochs", type=int, default=0, help="epochs of every row (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default="gradmix,none,ce", help=f"comma-separated rows: {', '.join(ROWS)}")
    parser.add_argument("--out", default="", help="folder of the runs (default runs/replicate-<preset>)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.runs.split(",") if name not in ROWS]
    if unknown:
        parser.error(f"unknown --runs entries {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    return args, extra


def unpack_cifar10(data_root: Path, source: Path) -> None:
    """Unpacks CIFAR-10's JPEG folders from ``source``/unpack.sh into ``data_root`` unless already there."""
    if (data_root / "cifar10-jpeg").is_dir():
        return
    subprocess.run(["bash", str(source / "unpack.sh"), str(data_root), "cifar10"], check=True)


def train_command(args, preset: dict, row: str, folder: Path, extra: list[str]) -> list[str]:
    command = [sys.executable, "-m", "fastgradmix.train", "--protocol", preset["protocol"], "--split", args.split,
               "--epochs", str(args.epochs or preset["epochs"]), "--seed", str(args.seed), "--out", str(folder),
               "--no-progress", *preset["extra"], *ROWS[row], *extra]
    if args.data_root:
        command += ["--data-root", args.data_root]
    return command


def run_row(args, preset: dict, row: str, out: Path, extra: list[str]) -> dict:
    """Trains one row (unless finished earlier) and reads its results back; {} when it failed."""
    folder = out / row
    results_file = folder / ("summary.json" if args.split == "all" else "results.json")
    wall_s = None
    if not results_file.is_file():
        print(f"replicate: training {row} in {folder}", flush=True)
        start = time.perf_counter()
        done = subprocess.run(train_command(args, preset, row, folder, extra))
        wall_s = time.perf_counter() - start
        if done.returncode != 0:
            print(f"replicate: {row} failed (exit {done.returncode})", flush=True)
            return {}
    results = json.loads(results_file.read_text())
    if args.split == "all":  # a sweep: the mean over the splits
        return {"row": row, "score": "msp" if row == "ce" else "sum", "auroc": results["auroc"]["mean"],
                "closed_acc": results["closed_acc"]["mean"], "epochs": results["epochs"], "wall_s": wall_s,
                "train_wall_s": sum(s["train_wall_s"] for s in results["splits"])}
    return {"row": row, "score": results.get("score", "sum"), "auroc": results["auroc"],
            "closed_acc": results["closed_acc"], "epochs": results["epochs"], "wall_s": wall_s,
            "train_wall_s": results["train_wall_s"]}


def ce_top_k_row(folder: Path) -> dict:
    """The ce run scored by Algorithm 1's top-k similarity on its normalised pooled features (evaluate)."""
    subprocess.run([sys.executable, "-m", "fastgradmix.evaluate", "--run", str(folder), "--tasks", "osr",
                    "--score", "sum", "--no-progress"], check=True, stdout=subprocess.DEVNULL)
    results = json.loads((folder / "results.json").read_text())
    osr = results["evaluation"]["osr"]
    return {"row": "ce (top-k)", "score": "sum", "auroc": osr["auroc"], "closed_acc": osr["closed_acc"],
            "epochs": results["epochs"], "wall_s": None, "train_wall_s": results["train_wall_s"]}


def table(rows: list[dict]) -> str:
    def seconds(value):
        return "" if value is None else f"{value:.0f}"

    lines = ["| row | open-set score | AUROC | closed-set acc. | epochs | train s | run s (incl. eval) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['row']} | {r['score']} | {r['auroc']:.4f} | {r['closed_acc']:.4f} | {r['epochs']} | "
                     f"{seconds(r['train_wall_s'])} | {seconds(r['wall_s'])} |")
    return "\n".join(lines) + "\n"


def machine() -> str:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else \
        f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return f"{device}, torch {torch.__version__}, python {platform.python_version()}"


def main(argv: list[str] | None = None) -> list[dict]:
    args, extra = parse_args(argv)
    preset = PRESETS[args.preset]
    if preset["protocol"] != "digits" and not args.data_root:
        raise SystemExit(f"bench/replicate.py: --preset {args.preset} trains on {preset['protocol']}: give "
                         "--data-root (and --unpack-from ../shared/data to unpack it there)")
    if args.unpack_from:
        unpack_cifar10(Path(args.data_root), Path(args.unpack_from))
    out = Path(args.out or f"runs/replicate-{args.preset}")
    rows = []
    for row in args.runs.split(","):
        result = run_row(args, preset, row, out, extra)
        if result:
            rows.append(result)
            if row == "ce" and args.split != "all":
                rows.append(ce_top_k_row(out / row))
    command = "python bench/replicate.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = (f"# {preset['protocol']} split {args.split}, preset {args.preset}, seed {args.seed}\n\n{table(rows)}\n"
            "AUROC: known vs unknown test classes; closed-set accuracy on the known test images (ce: its linear "
            "classifier; ce (top-k): Algorithm 1 on its features). One seed per row. run s: the training process "
            "(data loading, training, evaluation), empty for rows finished earlier.\n\n"
            f"Command: `{command.strip()}`  \nMachine: {machine()}\n")
    write_text(out / "table.md", text)  # atomic, like every run file
    write_json(out / "table.json", rows)
    print()
    print(text)
    return rows


if __name__ == "__main__":
    main()
