"""One typed configuration for a run, per-protocol presets, and the argparse front end generated from it.

Precedence: dataclass defaults < the protocol's preset < options given on the command line. With
``--resume`` the saved config.json of the run replaces the first two, so a resumed run continues with
the settings it started with unless the user overrides one explicitly.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from fastgradmix.common.cli import OneLineParser
from fastgradmix.common.errors import UserError
from fastgradmix.common.precision import PRECISIONS
from fastgradmix.distributed.collectives import world_size
from fastgradmix.runs.presets import PRESET_NAMES, preset_values


def option(default: Any, help: str, choices: tuple | None = None, parse: Any = None, low: float | None = None,
           high: float | None = None, above: float | None = None) -> Any:
    """A config field; ``parse`` turns the command-line string into the value when the type alone cannot;
    ``low``/``high`` bound a number (inclusive), ``above`` from below (exclusive). The option parser,
    ``validate`` and config.json's schema (runs/config_schema.py) all read these, so a new option is typed
    and checked everywhere at once."""
    return field(default=default, metadata={"help": help, "choices": choices, "parse": parse, "low": low,
                                            "high": high, "above": above})


# Upper limits that keep one number from asking for unbounded memory (a config.json is read back by
# evaluate/export and may be damaged); far above the paper's settings (32/64 px, width 64, 128-d features).
MAX_IMAGE_SIZE = 1024
MAX_WIDTH = 1024
MAX_FEATURE_DIM = 8192
MAX_MOCO_QUEUE = 2**20  # MoCo's ImageNet queue is 65536
MAX_THREADS = 1024  # --threads and --workers
MAX_SEED = 2**63 - 1  # torch.manual_seed takes a 64-bit integer


def finite_float(text: str) -> float:
    """A float option: inf, nan and numbers that overflow to inf are refused while parsing."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def split_value(text: str) -> int | str:
    """--split: a split index, or ``all`` (every split in turn, then mean +- std; see training/sweep.py)."""
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid split {text!r}: give an index such as 0, or all") from None


AUGMENTATIONS = ("none", "mixup", "cutmix", "gradcam-mix", "gradmix")
# supcon+simclr: theta L_supcon + lam (L_simclr + mix); supcon: theta L_supcon (+ lam mix with a mixed view);
# simclr: lam (L_simclr + mix); moco: lam (L_moco + mix), MoCo v2 (see training/objectives/moco.py);
# ce: the cross-entropy baseline (a linear classifier on the pooled features, one view, no mixed view)
METHODS = ("supcon+simclr", "supcon", "simclr", "moco", "ce")
# the open-set score: sum / normalized are Algorithm 1's top-k similarity (any method, on the features it
# scores); msp / mls need a classifier (--method ce): maximum softmax probability, maximum logit;
# auto = msp for ce, sum otherwise
SCORES = ("auto", "sum", "normalized", "msp", "mls")
LOGIT_SCORES = ("msp", "mls")


def resolved_score(method: str, score: str) -> str:
    """--score with auto resolved for the method."""
    if score == "auto":
        return "msp" if method == "ce" else "sum"
    return score
VIEW_KINDS = ("auto", "simclr", "simclr-noflip", "crop", "rotate")
LR_SCHEDULES = ("cosine", "epoch-cosine")


@dataclass
class Config:
    # what to train on
    protocol: str = option("digits", "OSR protocol (digits is bundled: no download)")
    split: int = option(0, "index of the known/unknown class split (0-4), or all: the five splits in turn into "
                        "runs/NAME/split<k>/, then a mean +- std table", parse=split_value, low=0)
    data_root: str = option("~/.cache/fastgradmix-data", "folder holding the datasets")
    download: bool = option(False, "download missing datasets from their official locations (checksums verified)")
    train_subset: int = option(0, "train on a class-balanced random subset of this many images (0 = all)", low=0)
    skip_bad_images: bool = option(False, "leave unreadable image files out (counted in the log) instead of "
                                   "stopping")
    known_classes: str = option("", "imagefolder: comma-separated known class folder names")
    unknown_classes: str = option("", "imagefolder: comma-separated unknown class folder names (default: "
                                  "every other test class)")
    out: str = option("", "run folder (default runs/<protocol>-split<k>-<aug>)")
    # model
    arch: str = option("resnet18", "encoder", ("resnet18", "resnet34", "resnet50"))
    width: int = option(64, "channels of the first ResNet stage (64 = standard ResNet)", low=1, high=MAX_WIDTH)
    stem: str = option("cifar", "first layers: cifar (3x3, no max-pool) or imagenet", ("cifar", "imagenet"))
    feature_dim: int = option(128, "projection head output size", low=1, high=MAX_FEATURE_DIM)
    image_size: int = option(32, "side of the square training/evaluation images", low=8, high=MAX_IMAGE_SIZE)
    # objective
    method: str = option("supcon+simclr", "training objective", METHODS)
    aug: str = option("gradmix", "extra mixed view for the self-supervised term", AUGMENTATIONS)
    mix_alpha: float = option(1.0, "mixup/cutmix: lam ~ Beta(alpha, alpha) per image", above=0)
    moco_queue: int = option(8196, "moco: negative keys in the queue", low=1, high=MAX_MOCO_QUEUE)
    moco_momentum: float = option(0.999, "moco: key encoder momentum m (k <- m k + (1 - m) q)", low=0, high=1)
    moco_temperature: float = option(0.2, "moco: InfoNCE temperature", above=0)
    moco_key_splits: int = option(1, "moco: encode the keys in this many shuffled chunks (shuffled BatchNorm "
                                  "on one device; 1 = one forward)", low=1)
    temperature: float = option(0.05, "contrastive temperature tau", above=0)
    theta: float = option(1.0, "weight of the supervised (SupCon) term", low=0)
    lam: float = option(1.2, "weight lambda of the self-supervised term (SimCLR + mix)", low=0)
    denominator: str = option("all", "contrastive denominator: all k != i (SupCon), or negatives only "
                              "(the paper's eq. 2)", ("all", "negatives"))
    cam_layers: str = option("conv5_2", "CAM layer(s), '+'-separated, e.g. conv4_2+conv5_2")
    cam_grad: str = option("exact", "exact: autograd.grad of the clean loss down to the CAM layer; "
                           "detached: grads from the full backward, clean features detached in l_mix",
                           ("exact", "detached"))
    cam_schedule: str = option("step", "when the CAM places the boxes: step (every step, from the current model, as "
                               "the published code) or epoch (the paper's text: each image's box found in its "
                               "previous epoch, kept per image; no mixed view in the first epoch)",
                               ("step", "epoch"))
    gamma_min: float = option(0.1, "smallest box side as a fraction of the image side", above=0, high=1)
    gamma_max: float = option(0.5, "largest box side as a fraction of the image side", low=0, high=1)
    gradmix_backend: str = option("auto", "GradMix ops: triton kernels on CUDA (auto), or the PyTorch "
                                  "reference", ("auto", "triton", "reference"))
    # optimisation
    epochs: int = option(100, "training epochs", low=1)
    batch_size: int = option(256, "images per step (each gives two views); under torchrun the global batch, "
                             "split over the processes", low=2)
    lr: float = option(1e-3, "Adam learning rate (cosine schedule to zero)", above=0)
    weight_decay: float = option(0.0, "Adam weight decay", low=0)
    seed: int = option(0, "random seed (model init, data order, augmentation, GradMix)", low=0, high=MAX_SEED)
    # evaluation
    topk: int = option(10, "k of the top-k class similarity score", low=1)
    score: str = option("auto", "open-set score: sum (Algorithm 1's top-k similarity), normalized (class scores / "
                        "their sum, as the published code), msp (maximum softmax probability) or mls (maximum "
                        "logit), the last two for --method ce; auto = msp for ce, sum otherwise", SCORES)
    eval_batch_size: int = option(512, "images per evaluation batch", low=1)
    # machine
    device: str = option("auto", "auto (cuda if present), cpu or cuda", ("auto", "cpu", "cuda"))
    # precision and layout (common/precision.py); config.json records them resolved, e.g. auto -> bf16
    precision: str = option("auto", "fp32, bf16 or fp16 (CUDA) autocast; auto: bf16 + channels_last where bf16 is "
                            "fast (CUDA compute capability >= 8.0; a CPU with avx512_bf16 or amx_bf16), else fp32 "
                            "NCHW; fp32 gives the reference numbers", PRECISIONS)
    amp: bool = option(False, "alias: --amp is --precision bf16 (fp16 with --amp-dtype fp16), --no-amp fp32")
    amp_dtype: str = option("bf16", "autocast dtype of --amp", ("bf16", "fp16"))
    channels_last: bool | None = option(None, "channels_last model and inputs (default: with bf16/fp16, not fp32)")
    compile: bool = option(False, "torch.compile the model, in regions split at the CAM layers (slow to start; off "
                           "by default: on the 2-core test CPU the compiled step is slower, bench/RESULTS.md)")
    threads: int = option(0, "CPU threads for torch (0 = torch's default)", low=0, high=MAX_THREADS)
    loader: str = option("auto", "input pipeline: dali (NVIDIA DALI, GPU or CPU), torch (torchvision per sample in "
                         "DataLoader workers), device (dataset on the device, batched views); auto = dali if "
                         "installed, else device on a GPU, else torch", ("auto", "dali", "torch", "device"))
    workers: int = option(2, "input pipeline CPU workers: DALI threads or DataLoader processes (0 = in-process)",
                          low=0, high=MAX_THREADS)
    # run control
    log_every: int = option(10, "steps between metric read-backs (the only host syncs in the loop)", low=1)
    resume: bool = option(False, "continue the run in --out from its last checkpoint")
    overwrite: bool = option(False, "replace an existing run folder")
    stop_after: int = option(0, "stop after this many epochs in this invocation (0 = run to the end); "
                             "the schedule still spans --epochs, so --resume continues exactly", low=0)
    save_every: int = option(0, "also keep the model every this many epochs as epoch_XXX.pt (0 = never), "
                             "e.g. for the linear-accuracy curve of fastgradmix.evaluate --tasks linear", low=0)
    progress: bool = option(True, "show progress bars")
    tensorboard: bool = option(False, "also write TensorBoard event files to runs/NAME/tb/: the logged numbers, a "
                               "grid of the mixed views per epoch, the final metrics and ROC curve (needs "
                               "pip install 'fastgradmix[tensorboard]')")
    # fidelity: the recipe of the paper or of the published code (docs/FIDELITY.md: one row per choice)
    preset: str = option("paper", "per-protocol recipe applied before your own options: paper (the paper's text, "
                         "the published scripts where it is silent) or official (the published code's GradMix, "
                         "scoring and schedule); see docs/FIDELITY.md", PRESET_NAMES)
    views: str = option("auto", "training views: simclr (crop, flip, colour jitter, grayscale), simclr-noflip, "
                        "crop (crop only), rotate (+-rotate_degrees only, no crop), auto (the data set's own: "
                        "crop only for digits)", VIEW_KINDS)
    rotate_degrees: float = option(5.0, "--views rotate: angle drawn uniformly in [-d, d] degrees", low=0,
                                    high=180)
    normalisation: str = option("dataset", "input normalisation: dataset (mean/std of the training images) or "
                                "published (the published code's constants; MNIST unnormalised)",
                                ("dataset", "published"))
    cam_loss: str = option("objective", "loss whose CAM places the box: objective (L_con of --method) or "
                           "self-supervised (SimCLR of both views; MoCo: InfoNCE), as the published code",
                           ("objective", "self-supervised"))
    cam_norm: str = option("image", "CAM normalisation per layer: image (each map by its max) or batch (one "
                           "min-max over the batch's maps, both views), as the published code", ("image", "batch"))
    box_share: str = option("per-image", "box size drawn per image, or one per batch (published)",
                            ("per-image", "per-batch"))
    box_draw: str = option("side", "gamma ~ U(gamma-min, gamma-max) is the box's side fraction (sides "
                           "round(gamma H)), or its area fraction (sides int(H sqrt(gamma)), published)",
                           ("side", "area"))
    box_position: str = option("window", "window: the box of highest CAM sum inside the image; hottest: centred "
                               "on the hottest CAM pixel, clipped to the border (published)", ("window", "hottest"))
    paste: str = option("partner", "what fills the box: the resized partner image, or uniform noise in [0, 1) "
                        "(published)", ("partner", "noise"))
    mix_anchors: str = option("mixed", "l_mix: anchor the mixed view (positive: the second view), or the clean "
                              "views as anchors with the forward of [mixed; v2] as positives (published)",
                              ("mixed", "clean"))
    mix_weight: str = option("area", "w_i of l_mix: the box's area fraction, or remaining = 1 - box area "
                             "(published)", ("area", "remaining"))
    loss_scale: str = option("none", "scale of SupCon, SimCLR and l_mix: none, or tau/0.07 (the published "
                             "SupConLoss's temperature / base_temperature)", ("none", "tau/0.07"))
    lr_schedule: str = option("cosine", "cosine: per step from --lr to 0; epoch-cosine: per epoch from --lr to "
                              "--lr * 0.8^3 (published)", LR_SCHEDULES)
    test_subsample: str = option("none", "evaluation images: none (all), or published (the first N per class "
                                 "that the published feature_reading.py keeps)", ("none", "published"))

    def cam_layer_list(self) -> list[str]:
        return [name for name in self.cam_layers.split("+") if name]

    def run_dir_name(self) -> str:
        # the default method keeps the short name; others say which (runs/digits-split0-moco-gradmix)
        what = self.aug if self.method == "supcon+simclr" else f"{self.method}-{self.aug}"
        if self.split == "all":  # the sweep's folder; split k runs in its split<k>/
            return self.out or f"runs/{self.protocol}-all-{what}"
        return self.out or f"runs/{self.protocol}-split{self.split}-{what}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)




def validate(cfg: Config) -> None:
    """Impossible option values end the run before anything is written: each number's own range (from the
    option table, finite numbers only), then the rules that tie options together."""
    for f in dataclasses.fields(Config):
        _check_bounds(f, getattr(cfg, f.name))
    per_process = cfg.batch_size // world_size()
    checks = [
        (cfg.gamma_min <= cfg.gamma_max,
         f"need 0 < --gamma-min <= --gamma-max <= 1 (got {cfg.gamma_min}, {cfg.gamma_max})"),
        (len(cfg.cam_layer_list()) >= 1, "--cam-layers needs at least one layer, e.g. conv5_2"),
        # under torchrun --batch-size is the global batch, split evenly over the processes
        (cfg.batch_size % world_size() == 0,
         f"--batch-size {cfg.batch_size} must be divisible by the {world_size()} processes (it is the global batch)"),
        (per_process >= 2,
         f"--batch-size {cfg.batch_size} gives fewer than 2 images to each of the {world_size()} processes"),
        (cfg.moco_key_splits <= per_process,
         f"--moco-key-splits must lie in [1, images per process = {per_process}] (got {cfg.moco_key_splits})"),
        (cfg.method != "moco" or cfg.moco_queue >= cfg.batch_size,
         f"--moco-queue {cfg.moco_queue} must hold at least one step's keys (--batch-size {cfg.batch_size})"),
        # the cross-entropy baseline: one view, no mixed view; msp / mls need its classifier
        (cfg.method != "ce" or cfg.aug == "none",
         f"--method ce trains without a mixed view: use --aug none (got --aug {cfg.aug})"),
        (cfg.method == "ce" or cfg.score not in LOGIT_SCORES,
         f"--score {cfg.score} needs a classifier's logits: train with --method ce, or use --score sum"),
        *fidelity_checks(cfg),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)


def _check_bounds(f: dataclasses.Field, value: Any) -> None:
    """One option's value against the option table: a finite number within its low/high."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return  # strings and switches (a split's "all" too): argparse's choices and the schema check them
    flag = "--" + f.name.replace("_", "-")
    if not math.isfinite(value):
        raise UserError(f"{flag} must be a finite number (got {value})")
    low, high, above = f.metadata.get("low"), f.metadata.get("high"), f.metadata.get("above")
    if low is not None and value < low:
        raise UserError(f"{flag} must be >= {low} (got {value})")
    if above is not None and value <= above:
        raise UserError(f"{flag} must be > {above} (got {value})")
    if high is not None and value > high:
        raise UserError(f"{flag} must be <= {high} (got {value})")


# GradMix variants that only the PyTorch reference implements (no Triton kernel): option -> its kernel value
KERNEL_FORMS = {"cam_norm": "image", "box_position": "window", "paste": "partner"}


def fidelity_checks(cfg: Config) -> list[tuple[bool, str]]:
    """The checks of the fidelity options (docs/FIDELITY.md), as ``validate``'s (ok, message) pairs."""
    without_kernel = [f"--{name.replace('_', '-')} {getattr(cfg, name)}" for name, kernel_value in KERNEL_FORMS.items()
                      if getattr(cfg, name) != kernel_value]
    return [
        (0 <= cfg.rotate_degrees <= 180, f"--rotate-degrees must lie in [0, 180] (got {cfg.rotate_degrees})"),
        (not (cfg.cam_loss == "self-supervised" and cfg.cam_grad == "detached"),
         "--cam-grad detached takes the CAM gradient from L_con's backward; --cam-loss self-supervised needs "
         "--cam-grad exact"),
        (cfg.cam_schedule == "step" or cfg.aug in ("gradmix", "gradcam-mix"),
         f"--cam-schedule epoch keeps the boxes of a CAM-placed view: use --aug gradmix or gradcam-mix "
         f"(got --aug {cfg.aug})"),
        (not (cfg.cam_schedule == "epoch" and cfg.cam_loss == "self-supervised"),
         "--cam-schedule epoch takes the CAM gradient from the step's own backward; --cam-loss self-supervised "
         "needs --cam-schedule step"),
        (not (cfg.mix_anchors == "clean" and cfg.method == "moco"),
         "--mix-anchors clean is the two-view form of SupCon/SimCLR; MoCo's mix term anchors the mixed query "
         "(use --mix-anchors mixed)"),
        (not (cfg.gradmix_backend == "triton" and cfg.aug in ("gradmix", "gradcam-mix") and without_kernel),
         f"--gradmix-backend triton: no Triton kernel for {', '.join(without_kernel)}; use --gradmix-backend auto "
         "or reference (the PyTorch reference runs these variants on every device)"),
    ]


def build_parser(prog: str, shown: dict[str, Any] | None = None) -> argparse.ArgumentParser:
    """The command line of ``Config``; ``shown`` are the defaults ``--help`` prints (the preset's, when the
    command line names a protocol, method or preset), else the dataclass's."""
    parser = OneLineParser(prog=prog, description="Train a GradMix open-set recognizer, then evaluate it. "
                            "Defaults shown are those of --preset/--protocol/--method as given (see "
                            "docs/FIDELITY.md).", argument_default=argparse.SUPPRESS)
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        meta = f.metadata
        default = f.default if shown is None else shown.get(f.name, f.default)
        # `from __future__ import annotations` makes every field type a string such as "int"
        if f.type in ("bool", "bool | None"):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction,
                                help=f"{meta['help']} (default {default})")
        else:
            kind = meta.get("parse") or {"int": int, "float": finite_float, "str": str}[f.type]
            parser.add_argument(flag, type=kind, choices=meta["choices"],
                                help=f"{meta['help']} (default {default!r})")
    return parser


def help_defaults(argv: list[str] | None) -> dict[str, Any] | None:
    """What ``--help`` shows as defaults: the resolved preset of the protocol, method and preset named in
    ``argv`` (None when they cannot be read; the real parser then reports the problem)."""
    scan = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    for name in ("protocol", "method", "preset"):
        scan.add_argument("--" + name)
    try:
        named, _ = scan.parse_known_args(argv)
    except SystemExit:
        return None
    named = vars(named)
    if named.get("preset", Config.preset) not in PRESET_NAMES:
        return None
    return merge(named).to_dict()


def parse_args(argv: list[str] | None, prog: str = "fastgradmix.train",
               saved: dict[str, Any] | None = None) -> tuple[Config, dict[str, Any]]:
    """Returns the merged config and the options that were given explicitly."""
    explicit = vars(build_parser(prog, help_defaults(argv)).parse_args(argv))
    return merge(explicit, saved), explicit


def merge(explicit: dict[str, Any], saved: dict[str, Any] | None = None) -> Config:
    if saved is not None:
        known = {f.name for f in dataclasses.fields(Config)}
        values = {k: v for k, v in saved.items() if k in known}
        if "precision" not in values:  # a run folder from before --precision: its --amp said which
            values["precision"] = amp_alias(values.get("amp", False), values.get("amp_dtype", "bf16"))
    else:  # the preset of the protocol (and method) first, then the user's own options
        values = resolved_preset(explicit)
    values.update(explicit)
    if "amp" in explicit:  # --amp / --no-amp: an alias of --precision
        alias = amp_alias(explicit["amp"], values.get("amp_dtype", Config.amp_dtype))
        if "precision" in explicit and explicit["precision"] != alias:
            raise UserError(f"--{'' if explicit['amp'] else 'no-'}amp means --precision {alias}, but --precision "
                            f"{explicit['precision']} was given too: give --precision alone")
        values["precision"] = alias
    if values.get("method") == "ce" and "aug" not in explicit and saved is None:
        values["aug"] = "none"  # the cross-entropy baseline has no mixed view: --method ce alone is enough
    return Config(**values)


def resolved_preset(explicit: dict[str, Any]) -> dict[str, Any]:
    """The values ``--preset`` sets for the protocol and method of ``explicit`` (runs/presets.py), with
    ``preset`` itself, so config.json records which preset a run resolved from."""
    preset = explicit.get("preset", Config.preset)
    values = preset_values(preset, explicit.get("protocol", Config.protocol), explicit.get("method", Config.method))
    return {"preset": preset, **values}


def amp_alias(amp: bool, amp_dtype: str) -> str:
    """The --precision that --amp (with --amp-dtype) or --no-amp stands for."""
    return amp_dtype if amp else "fp32"
