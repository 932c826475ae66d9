"""``--split all``: a protocol's class splits one after another, then one table of mean +- std.

Split k runs in ``runs/NAME/split<k>/`` as an ordinary run. The sweep is resumable per split: a split
whose results.json exists is skipped (its results are read back), one with a checkpoint but no results
is resumed from it with its saved config, the rest start fresh; ``--overwrite`` starts every split anew.
At the end ``runs/NAME/summary.md`` and ``summary.json`` hold AUROC and closed-set accuracy per split
and their mean +- sample standard deviation (ddof = 1; 0 for a single split).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastgradmix.common.errors import UserError
from fastgradmix.common.files import write_json, write_text
from fastgradmix.common.stats import mean_std
from fastgradmix.data.protocols import protocol_splits
from fastgradmix.distributed.collectives import is_main_process
from fastgradmix.distributed.launch import main_print
from fastgradmix.runs.config import Config, merge, validate
from fastgradmix.runs.folder import read_saved_config
from fastgradmix.runs.results_schema import read_results_file
from fastgradmix.training.run_files import locked_folder

METRICS = (("auroc", "AUROC"), ("closed_acc", "closed-set accuracy"))


def _split_config(cfg: Config, explicit: dict, split: int, split_dir: Path) -> Config | None:
    """The config of one split, or None when it finished earlier."""
    split_explicit = {**explicit, "split": split, "out": str(split_dir)}
    split_explicit.pop("resume", None)
    if not cfg.overwrite and (split_dir / "results.json").is_file():
        return None
    if not cfg.overwrite and (split_dir / "last.pt").is_file():
        try:
            saved = read_saved_config(split_dir)
        except UserError as err:
            raise UserError(f"--split all: cannot resume {split_dir}: {err}; delete the folder or pass "
                            "--overwrite") from None
        split_cfg = merge(split_explicit, saved)
        split_cfg.resume = True
    else:
        split_cfg = merge(split_explicit)
    validate(split_cfg)
    return split_cfg


def _read_results(path: Path) -> dict:
    """A finished split's results.json, checked (runs/results_schema.py): its numbers enter the sweep's table."""
    try:
        return read_results_file(path)
    except UserError as err:
        raise UserError(f"--split all: {err}; delete it to rerun that split") from None


def summarise(cfg: Config, per_split: list[dict]) -> dict:
    rows = [{key: result.get(key) for key in ("split", "auroc", "closed_acc", "openness", "n_train",
                                               "n_known_test", "n_unknown_test", "train_wall_s")}
            for result in per_split]
    summary = {"protocol": cfg.protocol, "method": cfg.method, "aug": cfg.aug, "epochs": cfg.epochs,
               "seed": cfg.seed, "splits": rows}
    for key, _ in METRICS:
        summary[key] = mean_std([row[key] for row in rows])
    return summary


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def to_markdown(summary: dict) -> str:
    lines = [f"# {summary['protocol']}: {len(summary['splits'])} splits, --aug {summary['aug']}, "
             f"{summary['epochs']} epochs, seed {summary['seed']}", "",
             "| split | " + " | ".join(name for _, name in METRICS) + " | train / known test / unknown test |",
             "|---|" + "---|" * len(METRICS) + "---|"]
    for row in summary["splits"]:
        cells = " | ".join(_cell(row[key]) for key, _ in METRICS)
        lines.append(f"| {row['split']} | {cells} | {row['n_train']} / {row['n_known_test']} / "
                     f"{row['n_unknown_test']} |")
    stats = [summary[key] for key, _ in METRICS]
    cells = " | ".join("n/a" if s is None else f"{s['mean']:.4f} ± {s['std']:.4f}" for s in stats)
    lines.append(f"| mean ± std | {cells} | |")
    return "\n".join(lines) + "\n"


def run_all_splits(cfg: Config, explicit: dict, train: Callable[[Config], dict]) -> dict:
    """Runs (or skips, or resumes) every split with ``train``, then writes summary.md and summary.json.
    The sweep's folder is locked throughout (each split's run locks its own split<k>/ as well)."""
    base = Path(cfg.run_dir_name())
    with locked_folder(base, "fastgradmix.train --split all"):
        return _run_all_splits_locked(cfg, explicit, train, base)


def _run_all_splits_locked(cfg: Config, explicit: dict, train: Callable[[Config], dict], base: Path) -> dict:
    n_splits = protocol_splits(cfg.protocol)
    per_split = []
    for split in range(n_splits):
        split_dir = base / f"split{split}"
        split_cfg = _split_config(cfg, explicit, split, split_dir)
        if split_cfg is None:
            main_print(f"split {split}/{n_splits - 1}: finished earlier ({split_dir / 'results.json'})")
            per_split.append(_read_results(split_dir / "results.json"))
            continue
        state = "resuming" if split_cfg.resume else "training"
        main_print(f"split {split}/{n_splits - 1}: {state} in {split_dir}")
        result = train(split_cfg)
        if not result:  # --stop-after ended this invocation inside the split
            main_print(f"--split all: stopped inside split {split}; run the same command again to continue")
            return {}
        per_split.append(result)
    summary = summarise(cfg, per_split)
    markdown = to_markdown(summary)
    if is_main_process():  # under torchrun every rank holds the summary; rank 0 writes it
        base.mkdir(parents=True, exist_ok=True)
        write_json(base / "summary.json", summary)
        write_text(base / "summary.md", markdown)
        print()
        print(markdown, end="")
        print(f"summary: {base / 'summary.md'}, {base / 'summary.json'}")
    return summary
