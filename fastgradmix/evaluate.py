"""python -m fastgradmix.evaluate --run runs/NAME --tasks osr,closed,ood,corruption,linear,diversity (or all).

The paper's evaluations (sections 4.2-4.4) of a trained run, reusing its config.json and last.pt:
- osr: known vs unknown test classes (AUROC, TNR@TPR95, DTACC, AUIN, AUOUT), closed-set accuracy, openness;
- closed: accuracy of the top-k classifier on the known test images (closed-set protocols too);
- ood: the known test images against out-sets (CIFAR-10 runs: CIFAR-100 and SVHN; any ImageFolder, or
  ODIN-style noise, with --ood-out);
- corruption: accuracy drop under the 15 Hendrycks & Dietterich corruptions x 5 severities (generated, or
  the released CIFAR-10-C files with --corruption-data), with --compare runs/OTHER side by side;
- linear: a linear classifier on the frozen encoder's features, top-1/top-5 on the known test images, and
  its curve over the epoch_XXX.pt checkpoints of --save-every (linear_eval.py);
- diversity: intrinsic dimension (TwoNN) of the test features, activated area S_M(tau) of the test images'
  LayerCAM maps and a grid of them, with --compare runs/OTHER side by side (diversity.py).

A sweep folder (``--split all``: runs/NAME/split<k>/) is evaluated split by split, with mean ± std.
Everything is computed first; then plots/*.png, report.md and the "evaluation" key of results.json are
written (each atomically), so a failure leaves the run folder as it was. Bad input: one line, exit 2.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fastgradmix import __version__
from fastgradmix.common.errors import UserError, run_cli
from fastgradmix.data.augment import AugmentSpec
from fastgradmix.data.openset import OpenSetData
from fastgradmix.data.protocols import PROTOCOLS, build_protocol
from fastgradmix.evaluation import plots, report
from fastgradmix.evaluation.corruptions import CORRUPTIONS, TABLES, table_for_side
from fastgradmix.evaluation.corruptions.released import check_cifar10_c
from fastgradmix.evaluation.diversity_measures import area_thresholds
from fastgradmix.evaluation.diversity_task import aggregate_diversity, diversity_task, grid_rows, score_cam_maps
from fastgradmix.evaluation.features import extract_features
from fastgradmix.evaluation.linear_task import (
    FEATURE_KINDS,
    aggregate_linear,
    checkpoints_over_epochs,
    linear_task,
    snapshot_loader,
)
from fastgradmix.evaluation.tasks import (
    SCORES,
    BankScorer,
    Scored,
    aggregate_splits,
    cap_rows,
    closed_task,
    corruption_task,
    ood_task,
    osr_task,
    released_corruption_task,
)
from fastgradmix.models import build_model
from fastgradmix.runs.checkpoint import load_checkpoint, write_json
from fastgradmix.runs.config import Config, merge
from fastgradmix.train import resolve_device

PROG = "fastgradmix.evaluate"
TASKS = ("osr", "closed", "ood", "corruption", "linear", "diversity")
COMPARABLE = ("corruption", "diversity")  # the tasks --compare evaluates on the other run too
NOISE_SETS = ("noise:uniform", "noise:gaussian")


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog=PROG, description="Evaluate a trained run: open-set, closed-set, OOD, corruptions.")
    parser.add_argument("--run", required=True, help="run folder (config.json + last.pt), or a --split all folder")
    parser.add_argument("--tasks", default="all", help=f"comma-separated: {','.join(TASKS)}, or all (default)")
    parser.add_argument("--topk", type=int, help="k of the top-k class similarity (default: the run's)")
    parser.add_argument("--score", choices=SCORES, default="sum",
                        help="open-set score: sum (Algorithm 1) or normalized (class scores / their sum, as the "
                             "published code)")
    parser.add_argument("--ood-out", default="", help="out-sets for ood, comma-separated: an OOD protocol "
                        "(e.g. cifar10-vs-svhn), folder:PATH (ImageFolder tree), noise:uniform, noise:gaussian "
                        "(default: the protocol's pairing)")
    parser.add_argument("--corruptions", default="all", help="comma-separated corruption names, or all")
    parser.add_argument("--severities", default="1,2,3,4,5", help="comma-separated severities 1-5")
    parser.add_argument("--corruption-table", choices=("auto", *TABLES), default="auto",
                        help="parameter table: auto = CIFAR-10-C up to 48 px, Tiny-ImageNet-C above")
    parser.add_argument("--corruption-data", default="", help="folder of the released CIFAR-10-C "
                        "(<corruption>.npy + labels.npy): use it instead of generating corruptions")
    parser.add_argument("--compare", default="", help="another run (e.g. without GradMix): its corruption "
                        "robustness and feature diversity side by side with this run's")
    parser.add_argument("--linear-features", choices=FEATURE_KINDS, default="encoder",
                        help="linear: the encoder's pooled features (default) or the projection head's outputs")
    parser.add_argument("--area-range", default="1e-5,1e-3", help="diversity: LOW,HIGH of the activated-area "
                        "thresholds tau (9, log-spaced; the maps are normalised to a maximum of 1)")
    parser.add_argument("--cam-grid", type=int, default=8, help="diversity: test images in the LayerCAM grid "
                        "(half known, half unknown when the protocol has unknowns)")
    parser.add_argument("--max-images", type=int, default=0, help="evaluate at most N images of each test set "
                        "(known, unknown, each out-set), drawn with --seed (0 = all)")
    parser.add_argument("--max-bank", type=int, default=0,
                        help="at most N bank images, class-balanced (0 = the run's training images)")
    parser.add_argument("--data-root", default="", help="dataset folder (default: the run's)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--batch-size", type=int, default=0, help="images per batch (default: the run's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of corruptions, noise out-sets and subsets")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars")
    return parser


# --- what to evaluate ---------------------------------------------------------------------------------------------

@dataclass
class Run:
    label: str  # "" for a single run, "split<k>" in a sweep
    path: Path
    cfg: Config
    checkpoint: dict


def locate_runs(path: Path) -> list[Path]:
    """The run folder itself, or the split<k>/ runs of a sweep folder, in split order."""
    if not path.is_dir():
        raise UserError(f"--run {path}: no such folder")
    if (path / "config.json").exists() or (path / "last.pt").exists():
        return [path]
    splits = sorted((p for p in path.iterdir() if p.is_dir() and re.fullmatch(r"split\d+", p.name)),
                    key=lambda p: int(p.name[5:]))
    if not splits:
        raise UserError(f"--run {path}: holds no run (config.json + last.pt) and no split<k>/ runs of a sweep")
    return splits


def load_run(path: Path, label: str) -> Run:
    config_path = path / "config.json"
    if not config_path.is_file():
        raise UserError(f"{config_path} not found: {path} is not a finished run folder")
    try:
        cfg = merge({}, json.loads(config_path.read_text()))
    except (OSError, ValueError, TypeError) as err:
        raise UserError(f"cannot read {config_path} ({err})") from None
    checkpoint = load_checkpoint(path / "last.pt")
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise UserError(f"{path / 'last.pt'} holds no model state: not a fastgradmix checkpoint")
    return Run(label, path, cfg, checkpoint)


def _names(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        raise UserError(f"unknown {what} {', '.join(unknown) or repr(text)}: choose from {', '.join(allowed)}")
    return names


def parse_tasks(text: str) -> tuple[list[str], bool]:
    """The tasks, and whether they came from ``all`` (inapplicable ones are then skipped with a note)."""
    if text.strip() == "all":
        return list(TASKS), True
    return _names(text, TASKS, "task"), False


def parse_area_range(text: str) -> list[float]:
    """--area-range LOW,HIGH -> 9 thresholds log-spaced from LOW to HIGH."""
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"--area-range {text!r}: give LOW,HIGH, e.g. 1e-5,1e-3") from None
    if not 0 < low <= high:
        raise UserError(f"--area-range {text!r}: need 0 < LOW <= HIGH")
    return area_thresholds(low, high, 9)


def default_out_sets(protocol: str) -> list[str]:
    """Registered OOD protocols sharing the run's in-distribution: for X-closed or X-vs-Y, every X-vs-*."""
    if protocol.endswith("-closed"):
        base = protocol[: -len("-closed")]
    elif "-vs-" in protocol:
        base = protocol.split("-vs-")[0]
    else:
        return []
    return sorted(name for name in PROTOCOLS if name.startswith(f"{base}-vs-"))


@dataclass
class Plan:
    tasks: list[str]
    out_sets: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def plan(cfg: Config, data: OpenSetData, requested: list[str], from_all: bool, ood_out: str) -> Plan:
    """Which tasks apply to this run; with ``all`` the others are skipped with a note, else it is an error."""
    result = Plan([])
    out_sets = [s.strip() for s in ood_out.split(",") if s.strip()] or default_out_sets(cfg.protocol)
    for task in requested:
        why = None
        if task == "osr" and data.n_unknown_test == 0:
            why = f"protocol {cfg.protocol} is closed-set: it has no unknown test classes"
        if task == "ood" and not out_sets:
            why = (f"protocol {cfg.protocol} has no OOD pairing (CIFAR-10 runs: cifar10-closed -> cifar10-vs-cifar100, "
                   "cifar10-vs-svhn); choose an out-set with --ood-out (folder:PATH, noise:uniform, ...)")
        if why is None:
            result.tasks.append(task)
        elif from_all:
            result.skipped[task] = why
        else:
            raise UserError(f"--tasks {task}: {why}")
    if "ood" in result.tasks:
        result.out_sets = out_sets
        for spec in out_sets:
            if not (spec in PROTOCOLS or spec in NOISE_SETS or spec.startswith("folder:")):
                pairs = ", ".join(default_out_sets("cifar10-closed"))
                raise UserError(f"--ood-out {spec}: not an OOD protocol ({pairs}), folder:PATH or "
                                f"{' / '.join(NOISE_SETS)}")
    return result


# --- loading data and the model -------------------------------------------------------------------------------------

def load_data(cfg: Config, data_root: str, progress: bool) -> OpenSetData:
    data = build_protocol(cfg.protocol, cfg.split, cfg.image_size, data_root or cfg.data_root,
                          skip_bad_images=cfg.skip_bad_images, known_classes=cfg.known_classes or None,
                          unknown_classes=cfg.unknown_classes or None, progress=progress)
    return data.subset_train(cfg.train_subset, cfg.seed)  # the bank the run was trained (and evaluated) with


def load_model(run: Run, data: OpenSetData, device: torch.device, checkpoint: dict | None = None,
               name: str = "last.pt") -> torch.nn.Module:
    """The run's model from its last.pt, or from another ``checkpoint`` of the run (file ``name``)."""
    cfg = run.cfg
    try:
        model = build_model(cfg.arch, data.channels, cfg.stem, cfg.width, cfg.feature_dim, cfg.channels_last)
        model.load_state_dict((run.checkpoint if checkpoint is None else checkpoint)["model"])
    except (KeyError, RuntimeError, ValueError) as err:
        raise UserError(f"{run.path / name} does not fit the run's config.json "
                        f"({str(err).strip().splitlines()[0]})") from None
    return model.to(device).eval()


def _match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """RGB out-set images for a grey run become luma (ITU-R 601); grey ones for an RGB run are repeated."""
    if images.shape[1] == channels:
        return images
    if channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images.float() * weights).sum(dim=1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    return images.expand(-1, channels, -1, -1).contiguous()


def load_out_set(spec: str, cfg: Config, data: OpenSetData, count: int, args) -> torch.Tensor:
    """The uint8 images (N, C, H, W) of one out-set, at the in-distribution's stored size and channels."""
    channels, height, width = data.test_images.shape[1:]
    if spec in NOISE_SETS:
        # ODIN's synthetic sets: i.i.d. U(0, 1), or N(0.5, 1) clipped to [0, 1]; as many as the known test images
        generator = torch.Generator().manual_seed(args.seed)
        shape = (count, channels, height, width)
        values = (torch.rand(shape, generator=generator) if spec == "noise:uniform"
                  else (0.5 + torch.randn(shape, generator=generator)).clamp(0, 1))
        return (values * 255).round().to(torch.uint8)
    if spec.startswith("folder:"):
        from fastgradmix.data.readers.cache import DecodeOptions
        from fastgradmix.data.readers.folders import class_folders, read_class_folders

        folder = Path(spec[len("folder:"):]).expanduser()
        if not folder.is_dir():
            raise UserError(f"--ood-out {spec}: no such folder")
        names = class_folders(folder)
        if not names:
            raise UserError(f"--ood-out {spec}: expected an ImageFolder tree (PATH/<class>/<images>), found no "
                            "class folders")
        options = DecodeOptions(cache_dir=None, progress=args.progress, size=max(height, width))
        images = read_class_folders(folder, names, None, options, tag=f"ood-{folder.name}").images
        return _match_channels(images, channels)
    out = build_protocol(spec, 0, cfg.image_size, args.data_root or cfg.data_root, progress=args.progress)
    if out.known_classes != data.known_classes:
        raise UserError(f"--ood-out {spec}: its in-distribution classes differ from the run's ({cfg.protocol}); "
                        "pair out-sets with runs on the same known classes")
    return out.test_images[out.test_labels < 0]


# --- evaluating one run -----------------------------------------------------------------------------------------------

def settings(args, run: Run, topk: int) -> dict:
    return {"topk": topk, "score": args.score, "max_images": args.max_images, "max_bank": args.max_bank,
            "seed": args.seed, "checkpoint_epoch": run.checkpoint.get("epoch"),
            "evaluated_at": datetime.datetime.now().isoformat(timespec="seconds"), "fastgradmix": __version__,
            "torch": torch.__version__}


def evaluate_run(run: Run, args, requested: list[str], from_all: bool, device: torch.device,
                 corruption_names: list[str], severities: list[int]) -> tuple[dict, dict, dict]:
    """(results per task, skipped tasks, score arrays for the plots) of one run."""
    cfg = run.cfg
    data = load_data(cfg, args.data_root, args.progress)
    todo = plan(cfg, data, requested, from_all, args.ood_out)
    if args.max_bank:
        data = data.subset_train(args.max_bank, args.seed)
    topk = cfg.topk if args.topk is None else args.topk
    out_sets = {}
    known_images, known_labels = cap_rows(data.test_images[data.test_labels >= 0],
                                          data.test_labels[data.test_labels >= 0], args.max_images, args.seed)
    for spec in todo.out_sets:  # read every out-set before the long part starts
        try:
            images = load_out_set(spec, cfg, data, known_images.shape[0], args)
        except UserError as err:
            if not (from_all and not args.ood_out):  # asked for explicitly: an error
                raise
            todo.skipped[f"ood {spec}"] = str(err)  # a default pairing whose data is absent: a note
            continue
        out_sets[spec] = cap_rows(images, torch.zeros(images.shape[0], dtype=torch.int64), args.max_images,
                                  args.seed)[0]
    if "ood" in todo.tasks and not out_sets:
        todo.tasks.remove("ood")
    if "corruption" in todo.tasks and args.corruption_data and data.test_images.shape[1:] != (3, 32, 32):
        raise UserError("--corruption-data: released CIFAR-10-C images are 3x32x32, the run's are "
                        f"{'x'.join(map(str, data.test_images.shape[1:]))}")

    model = load_model(run, data, device)
    spec = AugmentSpec(size=cfg.image_size, mean=data.mean, std=data.std, flip=data.flip, color=data.color)
    scorer = BankScorer(model, data, spec, topk, args.batch_size or cfg.eval_batch_size, device, cfg.channels_last,
                        args.progress, args.score)
    common = settings(args, run, topk)
    results: dict = {}
    series: dict = {}
    known_scored = scorer.score(known_images, desc="known test features")
    if "osr" in todo.tasks:
        unknown_images, unknown_labels = cap_rows(data.test_images[data.test_labels < 0],
                                                  data.test_labels[data.test_labels < 0], args.max_images, args.seed)
        unknown_scored = scorer.score(unknown_images, desc="unknown test features")
        scored = Scored(torch.cat([known_scored.predictions, unknown_scored.predictions]),
                        torch.cat([known_scored.open_scores, unknown_scored.open_scores]))
        results["osr"] = {**osr_task(scored, torch.cat([known_labels, unknown_labels]), data), "settings": common}
        series["osr"] = (known_scored.open_scores.numpy(), unknown_scored.open_scores.numpy())
    closed = {**closed_task(known_scored, known_labels), "settings": common}
    if "closed" in todo.tasks:
        results["closed"] = closed
    if "ood" in todo.tasks:
        results["ood"], series["ood"] = {}, {}
        for name, images in out_sets.items():
            out_scores = scorer.score(images, desc=f"{name} features").open_scores
            results["ood"][name] = {**ood_task(known_scored.open_scores, out_scores), "settings": common}
            series["ood"][name] = (known_scored.open_scores.numpy(), out_scores.numpy())
    if "corruption" in todo.tasks:
        results["corruption"] = corruption_result(scorer, data, known_images, known_labels, closed["closed_acc"],
                                                  corruption_names, severities, args, common)
    if "linear" in todo.tasks:
        results["linear"] = {**linear_result(run, data, spec, model, known_images, known_labels, args, device),
                             "settings": common}
        series["linear"] = results["linear"]["curve"]
    if "diversity" in todo.tasks:
        diversity, series["diversity"] = diversity_result(run, data, spec, model, scorer, known_images, args, device)
        results["diversity"] = {**diversity, "settings": common}
    return results, todo.skipped, series


def linear_result(run: Run, data: OpenSetData, spec: AugmentSpec, model: torch.nn.Module, test_images: torch.Tensor,
                  test_labels: torch.Tensor, args, device: torch.device) -> dict:
    """The linear probe at last.pt and at each epoch_XXX.pt before it (features cached beside each file)."""
    cfg = run.cfg
    checkpoints = []
    for epoch, path in checkpoints_over_epochs(run.path, run.checkpoint.get("epoch", 0)):
        if path.name == "last.pt":
            checkpoints.append((epoch, path, lambda: model))
        else:
            checkpoints.append((epoch, path, snapshot_loader(path, lambda state, name=path.name: load_model(
                run, data, device, state, name))))
    # everything else the cached features depend on (the checkpoint file itself is part of the key)
    extra = {"protocol": cfg.protocol, "split": cfg.split, "image_size": cfg.image_size,
             "max_images": args.max_images, "max_bank": args.max_bank, "seed": args.seed,
             "data_root": str(args.data_root or cfg.data_root)}
    return linear_task(checkpoints, data.train_images, data.train_labels, test_images, test_labels, data.num_known,
                       spec, args.linear_features, args.batch_size or cfg.eval_batch_size, device, cfg.channels_last,
                       args.progress, extra)


def diversity_result(run: Run, data: OpenSetData, spec: AugmentSpec, model: torch.nn.Module, scorer: BankScorer,
                     known_images: torch.Tensor, args, device: torch.device) -> tuple[dict, dict]:
    """TwoNN of the known test features, S_M(tau) of their LayerCAM maps, and the maps of the grid's images."""
    cfg = run.cfg
    layers = cfg.cam_layer_list()
    batch_size = args.batch_size or cfg.eval_batch_size
    encoder = extract_features(model.encoder, known_images, spec, batch_size, device, cfg.channels_last,
                               desc="encoder features", progress=args.progress)
    head = scorer.features(known_images, "head features")

    def cam(images: torch.Tensor, desc: str) -> torch.Tensor:
        return score_cam_maps(model, images, spec, layers, scorer.bank, scorer.bank_labels, data.num_known,
                              scorer.topk, batch_size, device, cfg.channels_last, args.progress, desc)

    result = diversity_task(encoder, head, cam(known_images, "CAM maps"), layers, args.area_thresholds)
    rows = grid_rows(data.test_labels, args.cam_grid)
    labels = data.test_labels[rows].tolist()
    grid = {"images": data.test_images[rows], "maps": cam(data.test_images[rows], "CAM grid"),
            "captions": [data.known_classes[label] if label >= 0 else "unknown" for label in labels]}
    return result, {"thresholds": result["thresholds"], "area": result["activated_area"], "grid": grid}


def corruption_result(scorer: BankScorer, data: OpenSetData, images: torch.Tensor, labels: torch.Tensor,
                      clean_acc: float, names: list[str], severities: list[int], args, common: dict) -> dict:
    if args.corruption_data:
        result = released_corruption_task(scorer, args.corruption_data, data.known_classes, clean_acc, names,
                                          severities, args.max_images, args.seed, args.progress)
        return {**result, "source": f"released CIFAR-10-C ({args.corruption_data})", "table": "cifar10-c",
                "settings": common}
    table = None if args.corruption_table == "auto" else args.corruption_table
    result = corruption_task(scorer, images, labels, clean_acc, names, severities, args.seed, table, args.progress)
    table = table or table_for_side(max(images.shape[-2:]))
    return {**result, "source": f"generated (seed {args.seed})", "table": table, "settings": common}


# --- writing -------------------------------------------------------------------------------------------------------

def read_results(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {path} ({err}); fix or delete it, then evaluate again") from None


def merged(existing: dict, new: dict, skipped: dict, context: dict) -> dict:
    """``existing`` results with its "evaluation" updated task by task (training's keys untouched)."""
    evaluation = dict(existing.get("evaluation", {}))
    evaluation.update(new)
    # a note about a task (or one of its out-sets, "ood NAME") goes once the task is evaluated again
    notes = {task: why for task, why in evaluation.get("skipped", {}).items() if task.split()[0] not in new}
    notes.update(skipped)
    evaluation["skipped"] = notes
    evaluation["run"] = context
    return {**existing, "evaluation": evaluation}


def figures(series_per_run: list[tuple[str, dict]], evaluation: dict, compare: dict | None,
            compare_series: dict | None = None) -> dict[str, bytes]:
    """PNG bytes per report path, for the tasks evaluated now (``compare_series``: the other run's diversity)."""
    out: dict[str, bytes] = {}
    osr = [(label or "known vs unknown", *s["osr"]) for label, s in series_per_run if "osr" in s]
    if osr:
        out["plots/roc_osr.png"] = plots.roc_png(osr, "open-set recognition")
        out["plots/hist_osr.png"] = plots.histogram_png(osr, "open-set scores")
    ood = [(f"{label} {name}".strip(), *pair) for label, s in series_per_run for name, pair in s.get("ood", {}).items()]
    if ood:
        out["plots/roc_ood.png"] = plots.roc_png(ood, "OOD detection")
        out["plots/hist_ood.png"] = plots.histogram_png(ood, "OOD scores", names=("in-distribution", "out-set"))
    if "corruption" in evaluation:
        compared = compare is not None and "corruption" in compare
        runs = [(f"this run ({compare['this_aug']})" if compared else "this run", evaluation["corruption"])]
        if compared:
            runs.append((f"{compare['run']} ({compare['aug']})", compare["corruption"]))
        out["plots/corruption.png"] = plots.corruption_png(runs, f"corruption robustness ({runs[0][1]['table']})")
    this_label = f"this run ({compare['this_aug']})" if compare else "this run"
    linear = [(label or this_label, s["linear"]) for label, s in series_per_run if "linear" in s]
    if linear:
        out["plots/linear_curve.png"] = plots.linear_curve_png(linear)
    diversity = [(label or this_label, s["diversity"]) for label, s in series_per_run if "diversity" in s]
    if diversity:
        if compare_series is not None:
            diversity.append((f"{compare['run']} ({compare['aug']})", compare_series))
        out["plots/activated_area.png"] = plots.activated_area_png(
            [(label, d["thresholds"], d["area"]) for label, d in diversity],
            f"activated area of the LayerCAM maps ({evaluation['diversity']['cam_layers']})")
        first = diversity[0][1]["grid"]  # a sweep shows its first split
        rows = [(diversity[0][0], first["maps"].numpy())]
        if compare_series is not None:
            # the folder's name, not its path: a row label has the height of one row of maps
            rows.append((f"{Path(compare['run']).name} ({compare['aug']})", compare_series["grid"]["maps"].numpy()))
        out["plots/cam_grid.png"] = plots.cam_grid_png(_display_images(first["images"]), first["captions"], rows,
                                                       "LayerCAM of test images (score of the best known class)")
    return out


def _display_images(images: torch.Tensor) -> np.ndarray:
    """uint8 (G, C, H, W) -> float (G, H, W, 3) in [0, 1] for matplotlib (gray repeated)."""
    pixels = images.float().div(255)
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    return pixels.permute(0, 2, 3, 1).numpy()


def main(argv: list[str] | None = None) -> None:
    def run() -> None:
        args = build_parser().parse_args(argv)
        evaluate(args)

    run_cli(run, PROG)


def evaluate(args) -> dict:
    requested, from_all = parse_tasks(args.tasks)
    corruption_names = CORRUPTIONS if args.corruptions == "all" else _names(args.corruptions, CORRUPTIONS,
                                                                             "corruption")
    try:
        severities = sorted({int(s) for s in args.severities.split(",") if s.strip()})
    except ValueError:
        raise UserError(f"--severities {args.severities!r}: give comma-separated integers 1-5") from None
    if not severities or not all(1 <= s <= 5 for s in severities):
        raise UserError(f"--severities {args.severities!r}: each must be 1-5")
    if args.max_images < 0 or args.max_bank < 0 or args.batch_size < 0:
        raise UserError("--max-images, --max-bank and --batch-size must be >= 0")
    if args.topk is not None and args.topk < 1:
        raise UserError(f"--topk must be >= 1 (got {args.topk})")
    if args.corruption_data and "corruption" in requested:
        check_cifar10_c(args.corruption_data, corruption_names)
    if args.cam_grid < 1:
        raise UserError(f"--cam-grid must be >= 1 (got {args.cam_grid})")
    args.area_thresholds = parse_area_range(args.area_range)
    compared_tasks = [task for task in requested if task in COMPARABLE]
    if args.compare and not compared_tasks:
        raise UserError("--compare compares corruption robustness and feature diversity: add corruption or "
                        "diversity to --tasks")
    device = resolve_device(args.device)
    root = Path(args.run)
    runs = [load_run(path, path.name if path != root else "") for path in locate_runs(root)]
    others = []
    if args.compare:
        others = [load_run(path, path.name if path != Path(args.compare) else "")
                  for path in locate_runs(Path(args.compare))]
        if "diversity" in compared_tasks and (others[0].cfg.protocol, others[0].cfg.split) != (
                runs[0].cfg.protocol, runs[0].cfg.split):
            raise UserError(f"--compare {args.compare}: diversity compares runs on the same test images, but it is "
                            f"{others[0].cfg.protocol} split {others[0].cfg.split}, this run "
                            f"{runs[0].cfg.protocol} split {runs[0].cfg.split}")
    result_paths = [run.path / "results.json" for run in runs] + ([root / "results.json"] if len(runs) > 1 else [])
    existing = {path: read_results(path) for path in result_paths}  # unreadable files fail before the work

    # compute everything first
    per_run, series_per_run = [], []
    skipped: dict = {}
    for index, run in enumerate(runs):
        if len(runs) > 1:
            print(f"{PROG}: {run.label} ({index + 1} of {len(runs)})", file=sys.stderr)
        results, skipped, series = evaluate_run(run, args, requested, from_all, device, corruption_names,
                                                severities)
        per_run.append((run, results))
        series_per_run.append((run.label, series))
    combined = aggregate(per_run) if len(runs) > 1 else per_run[0][1]
    compare, compare_series = None, None
    compared_tasks = [task for task in compared_tasks if task in combined]
    if others and compared_tasks:
        compare, compare_series = compare_runs(others, args, compared_tasks, corruption_names, severities, device,
                                               runs[0])

    # then write: figures, per-split results, the folder's results and report
    cfg = runs[0].cfg
    context = {"protocol": cfg.protocol, "method": cfg.method, "aug": cfg.aug, "epochs": cfg.epochs, "seed": cfg.seed}
    context.update({"splits": [run.cfg.split for run in runs]} if len(runs) > 1 else {"split": cfg.split})
    new = dict(combined)
    if compare is not None:
        new["compare"] = compare
    images = figures(series_per_run, new, compare, compare_series)
    for name, data in images.items():
        report.write_bytes(root / name, data)
    if len(runs) > 1:
        for run, results in per_run:
            path = run.path / "results.json"
            write_json(path, merged(existing[path], results, skipped, {**context, "split": run.cfg.split}))
    final = merged(existing[root / "results.json"], new, skipped, context)
    present = {name for name in report.FIGURES if (root / name).is_file()}
    report.write_bytes(root / "report.md", report.render(root, final, present).encode())
    write_json(root / "results.json", final)
    print_summary(root, final["evaluation"])
    return final


def aggregate(per_run: list[tuple[Run, dict]]) -> dict:
    """A sweep's results: every task's per-split results and mean ± std."""
    per_split = [(run.cfg.split, results) for run, results in per_run]
    combined = aggregate_splits(per_split)
    if "linear" in per_split[0][1]:
        combined["linear"] = aggregate_linear([(split, results["linear"]) for split, results in per_split])
    if "diversity" in per_split[0][1]:
        combined["diversity"] = aggregate_diversity([(split, results["diversity"]) for split, results in per_split])
    return combined


def compare_runs(others: list[Run], args, tasks: list[str], names: list[str], severities: list[int],
                 device: torch.device, this: Run) -> tuple[dict, dict | None]:
    """The comparable tasks on the other run(s), in memory only (nothing is written to their folders).

    Returns the comparison for results.json ({"run", "aug", "this_aug", and a result per task}) and the other
    run's diversity series for the figures (its first split's, in a sweep), or None.
    """
    per_run, first_series = [], None
    for run in others:
        evaluated, _, series = evaluate_run(run, args, tasks, False, device, names, severities)
        per_run.append((run, evaluated))
        first_series = first_series or series.get("diversity")
    other = aggregate(per_run) if len(per_run) > 1 else per_run[0][1]
    compare = {"run": str(args.compare), "aug": others[0].cfg.aug, "this_aug": this.cfg.aug,
               "method": others[0].cfg.method, "this_method": this.cfg.method}
    compare.update({task: other[task] for task in tasks if task in other})
    return compare, first_series


def print_summary(root: Path, evaluation: dict) -> None:
    def value(result: dict, key: str) -> str:
        if "mean" in result:
            stat = result["mean"].get(key)
            return "n/a" if stat is None else f"{stat['mean']:.4f} ± {stat['std']:.4f}"
        return f"{result[key]:.4f}"

    lines = []
    if "osr" in evaluation:
        lines.append(("AUROC (known vs unknown)", value(evaluation["osr"], "auroc")))
    if "closed" in evaluation:
        lines.append(("closed-set accuracy", value(evaluation["closed"], "closed_acc")))
    for name, result in evaluation.get("ood", {}).items():
        lines.append((f"OOD {name}: AUROC / TNR@TPR95", f"{value(result, 'auroc')} / {value(result, 'tnr')}"))
    if "corruption" in evaluation:
        lines.append(("corruption mean accuracy drop", f"{evaluation['corruption']['overall_mean_drop']:.4f}"))
    if "linear" in evaluation:
        linear = evaluation["linear"]
        lines.append((f"linear top-1 / top-5 ({linear['features']} features)",
                      f"{value(linear, 'top1')} / {value(linear, 'top5')}"))
    if "diversity" in evaluation:
        diversity = evaluation["diversity"]
        lines.append(("intrinsic dimension (encoder / head)",
                      f"{value(diversity, 'twonn_encoder')} / {value(diversity, 'twonn_head')}"))
        middle = len(diversity["thresholds"]) // 2
        lines.append((f"activated area S_M({diversity['thresholds'][middle]:.0e})",
                      f"{diversity['activated_area'][middle]:.4f}"))
    for task, why in evaluation.get("skipped", {}).items():
        lines.append((f"{task} skipped", why))
    width = max((len(name) for name, _ in lines), default=0)
    for name, text in lines:
        print(f"{name:<{width}}  {text}")
    print(f"report: {root / 'report.md'}")


if __name__ == "__main__":
    main()

