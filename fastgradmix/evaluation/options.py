"""The evaluation's options: the argparse front end of ``python -m fastgradmix.evaluate`` and ``EvalConfig``,
their checked, typed form, the only one the other evaluation modules read.

``parse_options`` does all option checking, before any run folder is read: a bad value ends as one line
and exit code 2 (argparse's own errors through OneLineParser, the others as UserError). Checks that need
the run (a task its protocol cannot do, out-set data that is absent) come later, in plan.py and
out_sets.py. An EvalConfig is frozen; a variant is made with ``dataclasses.replace``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from fastgradmix.common.cli import OneLineParser
from fastgradmix.common.errors import UserError
from fastgradmix.common.tensorboard import require_tensorboard
from fastgradmix.evaluation.corruptions import CORRUPTIONS, GLASS_SWAPS, TABLES
from fastgradmix.evaluation.corruptions.released import check_cifar10_c
from fastgradmix.evaluation.diversity_measures import DEFAULT_AREA_THRESHOLDS, area_thresholds
from fastgradmix.evaluation.diversity_task import AREA_MAPS, ID_FEATURES
from fastgradmix.evaluation.linear_task import FEATURE_KINDS
from fastgradmix.evaluation.out_sets import check_out_set_names
from fastgradmix.runs.config import SCORES
from fastgradmix.runs.precision import EVAL_PRECISIONS

PROG = "fastgradmix.evaluate"
TASKS = ("osr", "closed", "ood", "corruption", "linear", "diversity")
COMPARABLE = ("corruption", "diversity")  # the tasks --compare evaluates on the other run too


@dataclass(frozen=True)
class EvalConfig:
    """Every evaluation option, checked and parsed; the defaults are those of the command line."""

    run: str  # a run folder, or a --split all folder of split<k>/ runs
    tasks: tuple[str, ...] = TASKS  # in the order given
    from_all: bool = True  # the tasks came from "all": those a run cannot do are skipped with a note
    topk: int | None = None  # None: the run's
    score: str = "auto"  # auto: the run's --score (msp for --method ce, sum otherwise)
    test_subsample: str | None = None  # None: the run's
    ood_out: tuple[str, ...] = ()  # (): the protocol's default pairing
    corruptions: tuple[str, ...] = CORRUPTIONS
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)  # sorted, distinct
    corruption_table: str = "auto"
    corruption_data: str = ""  # the released CIFAR-10-C folder ("": generate the corruptions)
    glass_swap: str = "released"  # glass blur's pixel "swap" as the released data sets (a copy), or "true"
    compare: str = ""  # another run folder ("": none)
    linear_features: str = "encoder"
    area_thresholds: tuple[float, ...] = DEFAULT_AREA_THRESHOLDS
    area_maps: str = "raw"  # S_M of the raw maps at the CAM layers' resolution (eq. 7), or "normalized"
    id_features: str = "test"  # TwoNN of the known test features, or "train-per-class" (ID.py's Table 1)
    cam_grid: int = 8
    max_images: int = 0
    max_bank: int = 0
    data_root: str = ""  # "": the run's
    device: str = "auto"
    precision: str = "run"  # run: the precision and layout the run trained with (config.json)
    batch_size: int = 0  # 0: the run's eval batch size
    seed: int = 0
    progress: bool = True
    tensorboard: bool = False  # also add the numbers and figures to the run's TensorBoard events (tb/)

    @property
    def compared_tasks(self) -> tuple[str, ...]:
        """The requested tasks --compare evaluates on the other run too."""
        return tuple(task for task in self.tasks if task in COMPARABLE)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description="Evaluate a trained run: open-set, closed-set, OOD, corruptions.")
    parser.add_argument("--run", required=True, help="run folder (config.json + last.pt), or a --split all folder")
    parser.add_argument("--tasks", default="all", help=f"comma-separated: {','.join(TASKS)}, or all (default)")
    parser.add_argument("--topk", type=int, help="k of the top-k class similarity (default: the run's)")
    parser.add_argument("--score", choices=SCORES, default="auto",
                        help="open-set score: sum (Algorithm 1's top-k similarity), normalized (class scores / "
                             "their sum, as the published code), msp (maximum softmax probability) or mls (maximum "
                             "logit) of a --method ce run's classifier; auto (default): the run's")
    parser.add_argument("--test-subsample", choices=("none", "published"), default=None,
                        help="bank and test images: none (all) or published (the first N per class the published "
                             "feature_reading.py keeps; docs/FIDELITY.md) (default: the run's)")
    parser.add_argument("--ood-out", default="", help="out-sets for ood, comma-separated: an OOD protocol "
                        "(e.g. cifar10-vs-svhn), folder:PATH (ImageFolder tree), noise:uniform, noise:gaussian "
                        "(default: the protocol's pairing)")
    parser.add_argument("--corruptions", default="all", help="comma-separated corruption names, or all")
    parser.add_argument("--severities", default="1,2,3,4,5", help="comma-separated severities 1-5")
    parser.add_argument("--corruption-table", choices=("auto", *TABLES), default="auto",
                        help="parameter table: auto = CIFAR-10-C up to 48 px, Tiny-ImageNet-C above")
    parser.add_argument("--corruption-data", default="", help="folder of the released CIFAR-10-C "
                        "(<corruption>.npy + labels.npy): use it instead of generating corruptions")
    parser.add_argument("--glass-swap", choices=GLASS_SWAPS, default="released",
                        help="generated glass blur: released (default) reproduces the released CIFAR-10-C / "
                             "Tiny-ImageNet-C, whose scripts' in-place NumPy swap copies one pixel onto the other "
                             "(numpy issue 14428); true exchanges the two pixels")
    parser.add_argument("--compare", default="", help="another run (e.g. without GradMix): its corruption "
                        "robustness and feature diversity side by side with this run's")
    parser.add_argument("--linear-features", choices=FEATURE_KINDS, default="encoder",
                        help="linear: the encoder's pooled features (default) or the projection head's outputs")
    parser.add_argument("--area-range", default="1e-5,1e-3", help="diversity: LOW,HIGH of the activated-area "
                        "thresholds tau (9, log-spaced)")
    parser.add_argument("--area-maps", choices=AREA_MAPS, default="raw",
                        help="diversity: S_M counts pixels of the raw LayerCAM maps at the CAM layers' resolution "
                             "(the paper's eq. 7, default) or of the maps normalised to a maximum of 1 and upsampled "
                             "to the input size")
    parser.add_argument("--id-features", choices=ID_FEATURES, default="test",
                        help="diversity: intrinsic dimension of the known test images' features (default), or per "
                             "known class of the training images' features, averaged over the classes (the "
                             "published code's Table 1)")
    parser.add_argument("--cam-grid", type=int, default=8, help="diversity: test images in the LayerCAM grid "
                        "(half known, half unknown when the protocol has unknowns)")
    parser.add_argument("--max-images", type=int, default=0, help="evaluate at most N images of each test set "
                        "(known, unknown, each out-set), drawn with --seed (0 = all)")
    parser.add_argument("--max-bank", type=int, default=0,
                        help="at most N bank images, class-balanced (0 = the run's training images)")
    parser.add_argument("--data-root", default="", help="dataset folder (default: the run's)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--precision", choices=EVAL_PRECISIONS, default="run",
                        help="the model's precision: run (default: the one it trained with, e.g. bf16 autocast + "
                             "channels_last), or auto, fp32, bf16, fp16 (CUDA); features and scores are fp32")
    parser.add_argument("--batch-size", type=int, default=0, help="images per batch (default: the run's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of corruptions, noise out-sets and subsets")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars")
    parser.add_argument("--tensorboard", action="store_true", help="also write the metrics and figures to the "
                        "run's TensorBoard event files, runs/NAME/tb/ (needs pip install 'fastgradmix[tensorboard]')")
    return parser


def parse_options(argv: list[str] | None = None) -> EvalConfig:
    """The command line (``sys.argv[1:]`` when None) as an EvalConfig, every option checked."""
    args = build_parser().parse_args(argv)
    tasks, from_all = parse_tasks(args.tasks)
    corruptions = CORRUPTIONS if args.corruptions == "all" else _names(args.corruptions, CORRUPTIONS, "corruption")
    severities = parse_severities(args.severities)
    if args.max_images < 0 or args.max_bank < 0 or args.batch_size < 0:
        raise UserError("--max-images, --max-bank and --batch-size must be >= 0")
    if args.topk is not None and args.topk < 1:
        raise UserError(f"--topk must be >= 1 (got {args.topk})")
    if args.corruption_data and "corruption" in tasks:
        check_cifar10_c(args.corruption_data, corruptions)
    if args.cam_grid < 1:
        raise UserError(f"--cam-grid must be >= 1 (got {args.cam_grid})")
    thresholds = parse_area_range(args.area_range)
    if args.tensorboard:
        require_tensorboard()
    if args.compare and not any(task in COMPARABLE for task in tasks):
        raise UserError("--compare compares corruption robustness and feature diversity: add corruption or "
                        "diversity to --tasks")
    ood_out = tuple(spec.strip() for spec in args.ood_out.split(",") if spec.strip())
    if "ood" in tasks:
        check_out_set_names(ood_out)
    return EvalConfig(
        run=args.run, tasks=tuple(tasks), from_all=from_all, topk=args.topk, score=args.score,
        test_subsample=args.test_subsample, ood_out=ood_out,
        corruptions=tuple(corruptions), severities=tuple(severities), corruption_table=args.corruption_table,
        corruption_data=args.corruption_data, glass_swap=args.glass_swap, compare=args.compare,
        linear_features=args.linear_features,
        area_thresholds=tuple(thresholds), area_maps=args.area_maps, id_features=args.id_features,
        cam_grid=args.cam_grid, max_images=args.max_images,
        max_bank=args.max_bank, data_root=args.data_root, device=args.device, precision=args.precision,
        batch_size=args.batch_size,
        seed=args.seed, progress=args.progress, tensorboard=args.tensorboard)


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


def parse_severities(text: str) -> list[int]:
    """--severities: comma-separated integers 1-5, sorted and made distinct."""
    try:
        severities = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise UserError(f"--severities {text!r}: give comma-separated integers 1-5") from None
    if not severities or not all(1 <= s <= 5 for s in severities):
        raise UserError(f"--severities {text!r}: each must be 1-5")
    return severities


def parse_area_range(text: str) -> list[float]:
    """--area-range LOW,HIGH -> 9 thresholds log-spaced from LOW to HIGH."""
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"--area-range {text!r}: give LOW,HIGH, e.g. 1e-5,1e-3") from None
    if not 0 < low <= high:
        raise UserError(f"--area-range {text!r}: need 0 < LOW <= HIGH")
    return area_thresholds(low, high, 9)
