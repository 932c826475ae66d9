"""One typed configuration for a run, per-protocol presets, and the argparse front end generated from it.

Precedence: dataclass defaults < the protocol's preset < options given on the command line. With
``--resume`` the saved config.json of the run replaces the first two, so a resumed run continues with
the settings it started with unless the user overrides one explicitly.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from fastgradmix.common.cli import OneLineParser
from fastgradmix.common.errors import UserError
from fastgradmix.distributed.collectives import world_size
from fastgradmix.runs.presets import PRESET_NAMES, preset_values


def option(default: Any, help: str, choices: tuple | None = None, parse: Any = None) -> Any:
    """A config field; ``parse`` turns the command-line string into the value when the type alone cannot."""
    return field(default=default, metadata={"help": help, "choices": choices, "parse": parse})


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
# simclr: lam (L_simclr + mix); moco: lam (L_moco + mix), MoCo v2 (see training/objectives/moco.py)
METHODS = ("supcon+simclr", "supcon", "simclr", "moco")
VIEW_KINDS = ("auto", "simclr", "simclr-noflip", "crop", "rotate")
LR_SCHEDULES = ("cosine", "epoch-cosine")


@dataclass
class Config:
    # what to train on
    protocol: str = option("digits", "OSR protocol (digits is bundled: no download)")
    split: int = option(0, "index of the known/unknown class split (0-4), or all: the five splits in turn into "
                        "runs/NAME/split<k>/, then a mean +- std table", parse=split_value)
    data_root: str = option("~/.cache/fastgradmix-data", "folder holding the datasets")
    download: bool = option(False, "download missing datasets from their official locations (checksums verified)")
    train_subset: int = option(0, "train on a class-balanced random subset of this many images (0 = all)")
    skip_bad_images: bool = option(False, "leave unreadable image files out (counted in the log) instead of "
                                   "stopping")
    known_classes: str = option("", "imagefolder: comma-separated known class folder names")
    unknown_classes: str = option("", "imagefolder: comma-separated unknown class folder names (default: "
                                  "every other test class)")
    out: str = option("", "run folder (default runs/<protocol>-split<k>-<aug>)")
    # model
    arch: str = option("resnet18", "encoder", ("resnet18", "resnet34", "resnet50"))
    width: int = option(64, "channels of the first ResNet stage (64 = standard ResNet)")
    stem: str = option("cifar", "first layers: cifar (3x3, no max-pool) or imagenet", ("cifar", "imagenet"))
    feature_dim: int = option(128, "projection head output size")
    image_size: int = option(32, "side of the square training/evaluation images")
    # objective
    method: str = option("supcon+simclr", "training objective", METHODS)
    aug: str = option("gradmix", "extra mixed view for the self-supervised term", AUGMENTATIONS)
    mix_alpha: float = option(1.0, "mixup/cutmix: lam ~ Beta(alpha, alpha) per image")
    moco_queue: int = option(8196, "moco: negative keys in the queue")
    moco_momentum: float = option(0.999, "moco: key encoder momentum m (k <- m k + (1 - m) q)")
    moco_temperature: float = option(0.2, "moco: InfoNCE temperature")
    moco_key_splits: int = option(1, "moco: encode the keys in this many shuffled chunks (shuffled BatchNorm "
                                  "on one device; 1 = one forward)")
    temperature: float = option(0.05, "contrastive temperature tau")
    theta: float = option(1.0, "weight of the supervised (SupCon) term")
    lam: float = option(1.2, "weight lambda of the self-supervised term (SimCLR + mix)")
    denominator: str = option("all", "contrastive denominator: all k != i (SupCon), or negatives only "
                              "(the paper's eq. 2)", ("all", "negatives"))
    cam_layers: str = option("conv5_2", "CAM layer(s), '+'-separated, e.g. conv4_2+conv5_2")
    cam_grad: str = option("exact", "exact: autograd.grad of the clean loss down to the CAM layer; "
                           "detached: grads from the full backward, clean features detached in l_mix",
                           ("exact", "detached"))
    gamma_min: float = option(0.1, "smallest box side as a fraction of the image side")
    gamma_max: float = option(0.5, "largest box side as a fraction of the image side")
    gradmix_backend: str = option("auto", "GradMix ops: triton kernels on CUDA (auto), or the PyTorch "
                                  "reference", ("auto", "triton", "reference"))
    # optimisation
    epochs: int = option(100, "training epochs")
    batch_size: int = option(256, "images per step (each gives two views); under torchrun the global batch, "
                             "split over the processes")
    lr: float = option(1e-3, "Adam learning rate (cosine schedule to zero)")
    weight_decay: float = option(0.0, "Adam weight decay")
    seed: int = option(0, "random seed (model init, data order, augmentation, GradMix)")
    # evaluation
    topk: int = option(10, "k of the top-k class similarity score")
    eval_batch_size: int = option(512, "images per evaluation batch")
    # machine
    device: str = option("auto", "auto (cuda if present), cpu or cuda", ("auto", "cpu", "cuda"))
    amp: bool = option(False, "mixed precision: bf16 autocast (fp16 with --amp-dtype fp16 on CUDA)")
    amp_dtype: str = option("bf16", "autocast dtype under --amp", ("bf16", "fp16"))
    channels_last: bool = option(False, "channels_last model and inputs")
    compile: bool = option(False, "torch.compile the model, in regions split at the CAM layers (slow to start)")
    threads: int = option(0, "CPU threads for torch (0 = torch's default)")
    loader: str = option("auto", "input pipeline: dali (NVIDIA DALI, GPU or CPU), torch (torchvision per sample in "
                         "DataLoader workers), device (dataset on the device, batched views); auto = dali if "
                         "installed, else device on a GPU, else torch", ("auto", "dali", "torch", "device"))
    workers: int = option(2, "input pipeline CPU workers: DALI threads or DataLoader processes (0 = in-process)")
    # run control
    log_every: int = option(10, "steps between metric read-backs (the only host syncs in the loop)")
    resume: bool = option(False, "continue the run in --out from its last checkpoint")
    overwrite: bool = option(False, "replace an existing run folder")
    stop_after: int = option(0, "stop after this many epochs in this invocation (0 = run to the end); "
                             "the schedule still spans --epochs, so --resume continues exactly")
    save_every: int = option(0, "also keep the model every this many epochs as epoch_XXX.pt (0 = never), "
                             "e.g. for the linear-accuracy curve of fastgradmix.evaluate --tasks linear")
    progress: bool = option(True, "show progress bars")
    # fidelity: the recipe of the paper or of the published code (docs/FIDELITY.md: one row per choice)
    preset: str = option("paper", "per-protocol recipe applied before your own options: paper (the paper's text, "
                         "the published scripts where it is silent) or official (the published code's GradMix, "
                         "scoring and schedule); see docs/FIDELITY.md", PRESET_NAMES)
    views: str = option("auto", "training views: simclr (crop, flip, colour jitter, grayscale), simclr-noflip, "
                        "crop (crop only), rotate (+-rotate_degrees only, no crop), auto (the data set's own: "
                        "crop only for digits)", VIEW_KINDS)
    rotate_degrees: float = option(5.0, "--views rotate: angle drawn uniformly in [-d, d] degrees")
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
    score: str = option("sum", "open-set score: sum (Algorithm 1) or normalized (class scores / their sum, "
                        "published)", ("sum", "normalized"))
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
    """Impossible option values end the run before anything is written."""
    checks = [
        (cfg.epochs >= 1, f"--epochs must be >= 1 (got {cfg.epochs})"),
        (cfg.batch_size >= 2, f"--batch-size must be >= 2: GradMix pairs every image with another "
                              f"(got {cfg.batch_size})"),
        (cfg.lr > 0, f"--lr must be > 0 (got {cfg.lr})"),
        (cfg.weight_decay >= 0, f"--weight-decay must be >= 0 (got {cfg.weight_decay})"),
        (cfg.temperature > 0, f"--temperature must be > 0 (got {cfg.temperature})"),
        (cfg.theta >= 0 and cfg.lam >= 0, "--theta and --lam must be >= 0"),
        (0 < cfg.gamma_min <= cfg.gamma_max <= 1,
         f"need 0 < --gamma-min <= --gamma-max <= 1 (got {cfg.gamma_min}, {cfg.gamma_max})"),
        (cfg.image_size >= 8, f"--image-size must be >= 8 (got {cfg.image_size})"),
        (cfg.width >= 1 and cfg.feature_dim >= 1, "--width and --feature-dim must be >= 1"),
        (cfg.topk >= 1, f"--topk must be >= 1 (got {cfg.topk})"),
        (cfg.eval_batch_size >= 1, "--eval-batch-size must be >= 1"),
        (cfg.log_every >= 1, f"--log-every must be >= 1 (got {cfg.log_every})"),
        (cfg.stop_after >= 0, "--stop-after must be >= 0"),
        (cfg.threads >= 0, "--threads must be >= 0"),
        (cfg.workers >= 0, f"--workers must be >= 0 (got {cfg.workers})"),
        (cfg.split == "all" or cfg.split >= 0, f"--split must be >= 0 or all (got {cfg.split})"),
        (cfg.train_subset >= 0, f"--train-subset must be >= 0 (got {cfg.train_subset})"),
        (len(cfg.cam_layer_list()) >= 1, "--cam-layers needs at least one layer, e.g. conv5_2"),
        (cfg.mix_alpha > 0, f"--mix-alpha must be > 0 (got {cfg.mix_alpha})"),
        (0 <= cfg.moco_momentum <= 1, f"--moco-momentum must lie in [0, 1] (got {cfg.moco_momentum})"),
        (cfg.moco_temperature > 0, f"--moco-temperature must be > 0 (got {cfg.moco_temperature})"),
        # under torchrun --batch-size is the global batch, split evenly over the processes
        (cfg.batch_size % world_size() == 0,
         f"--batch-size {cfg.batch_size} must be divisible by the {world_size()} processes (it is the global batch)"),
        (cfg.batch_size // world_size() >= 2,
         f"--batch-size {cfg.batch_size} gives fewer than 2 images to each of the {world_size()} processes"),
        (1 <= cfg.moco_key_splits <= cfg.batch_size // world_size(),
         f"--moco-key-splits must lie in [1, images per process = {cfg.batch_size // world_size()}] "
         f"(got {cfg.moco_key_splits})"),
        (cfg.method != "moco" or cfg.moco_queue >= cfg.batch_size,
         f"--moco-queue {cfg.moco_queue} must hold at least one step's keys (--batch-size {cfg.batch_size})"),
        (cfg.save_every >= 0, f"--save-every must be >= 0 (got {cfg.save_every})"),
        *fidelity_checks(cfg),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)


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
        if f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction,
                                help=f"{meta['help']} (default {default})")
        else:
            kind = meta.get("parse") or {"int": int, "float": float, "str": str}[f.type]
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
    else:  # the preset of the protocol (and method) first, then the user's own options
        values = resolved_preset(explicit)
    values.update(explicit)
    return Config(**values)


def resolved_preset(explicit: dict[str, Any]) -> dict[str, Any]:
    """The values ``--preset`` sets for the protocol and method of ``explicit`` (runs/presets.py), with
    ``preset`` itself, so config.json records which preset a run resolved from."""
    preset = explicit.get("preset", Config.preset)
    values = preset_values(preset, explicit.get("protocol", Config.protocol), explicit.get("method", Config.method))
    return {"preset": preset, **values}
