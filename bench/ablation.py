"""A small ablation grid: one run per mixed-view augmentation (and, optionally, per CAM layer set), same seed and
settings, then one table of AUROC, closed-set accuracy and intrinsic dimension.

    python bench/ablation.py                                   # digits: none / mixup / cutmix / gradcam-mix / gradmix
                                                               # + the cross-entropy baseline (ce)
    python bench/ablation.py --layers conv4_2,conv5_2,conv3_2+conv4_2,conv4_2+conv5_2,conv3_2+conv4_2+conv5_2
    python bench/ablation.py --protocol cifar10 --data-root DIR -- --epochs 50 --amp   # after --: train options

Every run lives in its own folder under --out (``<method>-<aug>``, ``<method>-gradmix-<layers>``, ``ce``: the
cross-entropy baseline, ``--method ce``, scored by its maximum softmax probability); running the
command again skips finished runs, resumes interrupted ones from their checkpoint and only evaluates what is
missing, so the grid can be stopped and restarted at any time. The table goes to stdout and to
``<out>/ablation.md`` / ``ablation.json``. Intrinsic dimension and activated area come from
``python -m fastgradmix.evaluate --tasks diversity`` (TwoNN of the known test images' features).
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

from fastgradmix import __version__
from fastgradmix.common.files import write_bytes, write_json
from fastgradmix.evaluate import main as evaluate_main
from fastgradmix.runs.config import AUGMENTATIONS, METHODS
from fastgradmix.runs.results_schema import read_results_file
from fastgradmix.train import main as train_main

COLUMNS = ("AUROC", "closed-set acc.", "ID (encoder)", "ID (head)", "S_M(0.1)", "train time (s)")


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:  # everything after -- goes to fastgradmix.train unchanged
        extra = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    parser = argparse.ArgumentParser(prog="bench/ablation.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/ablation", help="folder of the grid's runs (default runs/ablation)")
    parser.add_argument("--protocol", default="digits")
    parser.add_argument("--split", type=int, default=0)
    parser.add_argument("--data-root", default="", help="dataset folder (not needed for digits)")
    parser.add_argument("--method", choices=[m for m in METHODS if m != "ce"], default="supcon+simclr",
                        help="the contrastive method of the --augs rows (the ce row: --ce)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--augs", default=",".join(AUGMENTATIONS),
                        help="comma-separated --aug values, one run each ('' for none)")
    parser.add_argument("--layers", default="", help="comma-separated --cam-layers sets: one GradMix run each")
    parser.add_argument("--ce", action=argparse.BooleanOptionalAction, default=True,
                        help="add the cross-entropy baseline (--method ce, --score msp) as a row (default on)")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)
    return args, extra


def grid(args) -> list[tuple[str, list[str]]]:
    """(folder name, train options) of every run of the grid."""
    runs = []
    for aug in filter(None, (a.strip() for a in args.augs.split(","))):
        if aug not in AUGMENTATIONS:
            raise SystemExit(f"bench/ablation.py: unknown --augs entry {aug!r}; choose from {', '.join(AUGMENTATIONS)}")
        runs.append((f"{args.method}-{aug}", ["--aug", aug]))
    for layers in filter(None, (layer.strip() for layer in args.layers.split(","))):
        runs.append((f"{args.method}-gradmix-{layers}", ["--aug", "gradmix", "--cam-layers", layers]))
    if args.ce:  # the baseline: a linear classifier on the same encoder, cross-entropy, one view
        runs.append(("ce", ["--method", "ce", "--aug", "none"]))
    return runs


def run_one(folder: Path, options: list[str], args, extra: list[str]) -> dict | None:
    """Trains (or resumes, or skips) one run, then evaluates its diversity if that is missing or stale.
    None when the run stopped before its last epoch (``-- --stop-after N``)."""
    common = ["--no-progress"] if not args.progress else []
    if not (folder / "results.json").is_file():
        if (folder / "last.pt").is_file():
            print(f"ablation: resuming {folder}", flush=True)
            train_main(["--resume", "--out", str(folder), *common])
        else:
            print(f"ablation: training {folder}", flush=True)
            base = ["--protocol", args.protocol, "--split", str(args.split), "--method", args.method,
                    "--seed", str(args.seed), "--out", str(folder), "--overwrite"]  # a row's --method wins
            if args.data_root:
                base += ["--data-root", args.data_root]
            train_main([*base, *options, *extra, *common])
    if not (folder / "results.json").is_file():
        return None
    results = read_results_file(folder / "results.json")
    diversity = results.get("evaluation", {}).get("diversity")
    if diversity is None or diversity["settings"].get("checkpoint_epoch") != results["epochs"]:
        print(f"ablation: evaluating the diversity of {folder}", flush=True)
        evaluate_main(["--run", str(folder), "--tasks", "diversity", "--area-range", "1e-3,0.5",
                       "--area-maps", "normalized", *common])
        results = read_results_file(folder / "results.json")
    return results


def row(name: str, results: dict) -> dict:
    diversity = results["evaluation"]["diversity"]
    thresholds = diversity["thresholds"]
    index = min(range(len(thresholds)), key=lambda i: abs(thresholds[i] - 0.1))  # the threshold nearest 0.1
    return {"run": name, "method": results["method"], "aug": results["aug"], "score": results.get("score", "sum"),
            "auroc": results["auroc"], "closed_acc": results["closed_acc"],
            "id_encoder": diversity["twonn_encoder"], "id_head": diversity["twonn_head"],
            "area_tau": thresholds[index], "area": diversity["activated_area"][index],
            "train_wall_s": results["train_wall_s"], "epochs": results["epochs"]}


def table(rows: list[dict]) -> str:
    lines = ["| run | " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for r in rows:
        auroc = "n/a" if r["auroc"] is None else f"{r['auroc']:.4f}"
        lines.append(f"| {r['run']} | {auroc} | {r['closed_acc']:.4f} | {r['id_encoder']:.2f} | {r['id_head']:.2f} "
                     f"| {r['area']:.3f} | {r['train_wall_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    args, extra = parse_args(argv)
    out = Path(args.out)
    finished = [(name, run_one(out / name, options, args, extra)) for name, options in grid(args)]
    rows = [row(name, results) for name, results in finished if results is not None]
    unfinished = [name for name, results in finished if results is None]
    if unfinished:
        print(f"ablation: not finished yet (run the same command again): {', '.join(unfinished)}")
    machine = (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
               f"torch {torch.__version__}, fastgradmix {__version__}, python {platform.python_version()}")
    command = "python bench/ablation.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = (f"# Ablation: {args.protocol} split {args.split}, --method {args.method}, seed {args.seed}, "
            f"{rows[0]['epochs'] if rows else '?'} epochs\n\n{table(rows)}\n"
            "AUROC: known vs unknown test classes (ce: by its maximum softmax probability; the others by Algorithm "
            "1's top-k similarity); closed-set acc.: top-k classifier (ce: its linear classifier) on the known test "
            "images; "
            "ID: TwoNN intrinsic dimension of the known test images' encoder / head features; S_M(0.1): share of "
            "LayerCAM pixels above 0.1 (maps normalised to max 1; score of the best known class).\n\n"
            f"Command: `{command.strip()}`  \nMachine: {machine}\n")
    write_bytes(out / "ablation.md", text.encode())  # atomic, like every run file
    write_json(out / "ablation.json", rows)
    print()
    print(text)
    return rows


if __name__ == "__main__":
    main()
