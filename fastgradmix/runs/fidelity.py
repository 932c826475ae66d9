"""docs/FIDELITY.md's tables, rendered from the presets themselves (runs/presets.py) so that they cannot disagree.

``ROWS`` is one row per choice: what the paper says (section / equation, as DESIGN.md section 2 reads it),
what the published code does (file / function of gawainxu/GradMix), the option that switches it; the two
preset columns are not written here but computed by resolving each preset for every protocol
(``preset_cell``). ``render_choices`` and ``render_protocols`` give the two generated tables;
``python -m tools.fidelity_doc`` writes them into docs/FIDELITY.md between its markers and ``--check``
fails when the file differs (tests/test_presets.py runs the check).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from fastgradmix.runs.config import Config, merge
from fastgradmix.runs.presets import PRESET_NAMES, PROTOCOL_NAMES

__all__ = ["PROTOCOL_COLUMNS", "ROWS", "Row", "preset_cell", "render_choices", "render_protocols", "resolve"]


@dataclass(frozen=True)
class Row:
    choice: str
    paper: str  # the paper, with section / equation
    code: str  # the published code, file / function
    keys: tuple[str, ...] = ()  # the Config fields of this choice; () = no option (the text says why)
    fixed: str = ""  # the preset cell when ``keys`` is empty (the same under both presets)
    method: str = "supcon+simclr"  # the method the preset columns are resolved for


def _o(*keys: str) -> tuple[str, ...]:
    return keys


ROWS: tuple[Row, ...] = (
    # objective and equations
    Row("objective", "L = theta L_supcon + lambda (L_simclr + mean_i w_i l_mix(i)) (DESIGN.md section 2)",
        "main_supcon_old.py train(): method_gama * loss_sup + method_lam * (loss_ssl + lam * loss_ssl_mix)",
        _o("method")),
    Row("SimCLR denominator", "eq. 1: all k != i, the positive included",
        "losses.py SupConLoss (no labels): all k != i", fixed="all k != i (eq. 1) under every --denominator"),
    Row("SupCon denominator", "eq. 2: the negatives only",
        "losses.py SupConLoss (labels): all k != i (Khosla et al.)", _o("denominator")),
    Row("l_mix denominator", "SimCLR's form (eq. 1): the positive included",
        "losses.py SupConLoss(features, features_positive=...): the clean features except the anchor",
        fixed="the positive included under every --denominator (mixed anchors); see l_mix roles"),
    Row("loss scale", "none (eqs. 1-2)",
        "losses.py SupConLoss: loss * (temperature / base_temperature), base 0.07 (SupCon, SimCLR, l_mix)",
        _o("loss_scale")),
    Row("temperature tau", "0.05 (DESIGN.md section 2)", "train_*.sh --temp 0.05", _o("temperature")),
    Row("weights theta / lambda", "theta 1, lambda 1.2 (CIFAR-10), 1.0 (Tiny ImageNet); other protocols not "
        "stated: the scripts' values", "train_mnist.sh 1.0 / 3.0, train_svhn.sh 0 / 1.0, train_cifar.sh "
        "1.0 / 1.2 (its GradMix lines, commented out: 0 / 1.0), train_imagenet.sh 1.0 / 1.0", _o("theta", "lam")),
    # optimisation
    Row("epochs", "as the published scripts; 200 for the self-supervised runs (section 4.5)",
        "train_cifar.sh 600, train_svhn.sh 300, train_mnist.sh 10, train_imagenet.sh 600-800", _o("epochs")),
    Row("epochs, --method simclr / moco", "200 (section 4.5)", "train_imagenet_moco*.sh: 200 or 800",
        _o("epochs"), method="simclr"),
    Row("batch size", "256", "train_*.sh --batch_size 256", _o("batch_size")),
    Row("optimiser", "Adam, lr 1e-3", "util.set_optimizer: Adam, no weight decay; --learning_rate 0.001",
        _o("lr", "weight_decay")),
    Row("lr schedule", "not in DESIGN.md's reading (fastgradmix: cosine to 0)",
        "util.adjust_learning_rate, --cosine True --lr_decay_rate 0.8: per epoch from lr to lr * 0.8^3",
        _o("lr_schedule")),
    Row("numeric precision", "not stated (fastgradmix's default auto trains and evaluates in bf16 autocast + "
        "channels_last where bf16 is fast, for speed: 2.3x per CPU step here; fp32 is the reference path and "
        "reproduces the earlier numbers exactly)",
        "main_supcon.py: fp32 (apex is imported, never used)", _o("precision")),
    # data
    Row("image size", "32 px, Tiny ImageNet 64 px", "datautil.image_size_mapping", _o("image_size")),
    Row("training views", "standard SimCLR augmentation for every protocol but MNIST",
        "datautil.get_train_datasets: ColorJitter(0.4,0.4,0.4,0.1) p 0.8, RandomResizedCrop(0.2-1), "
        "HorizontalFlip, Grayscale p 0.2; MNIST: RandomRotation(+-5) only (nearest neighbour)", _o("views")),
    Row("normalisation", "not stated", "datautil.mean_mapping / std_mapping (CIFAR std 0.2023, 0.1994, 0.2010; "
        "Tiny ImageNet: ImageNet's; MNIST: none)", _o("normalisation")),
    Row("mixed view on/off", "GradMix on every protocol but MNIST (DESIGN.md section 2)",
        "train_mnist.sh --mixup_positive False", _o("aug")),
    # GradMix
    Row("CAM loss", "the clean loss L_con (DESIGN.md section 2, step 2)",
        "datautil.parallel_gradients.forward: SupConLoss(temperature=0.05) without labels (SimCLR) of both views",
        _o("cam_loss")),
    Row("CAM gradient", "dL/dA at the CAM layers", "a second forward and a full loss.backward() with hooks "
        "(main_supcon.py's grad_splits=1 path keeps those parameter gradients in the step)", _o("cam_grad")),
    Row("CAM weighting", "LayerCAM: ReLU(G) A summed over channels", "datautil.layer_salient_maps: "
        "activations * relu(gradients), channel sum", _o("aug")),
    Row("CAM layers", "an ablation over conv4_2, conv5_2, conv3_2+conv4_2, ...; DESIGN.md fixes no default",
        "--grad_layers \"3\" = layer4[-1] = conv5_2 (main_supcon.py default; scripts also \"2\", \"2,3\")",
        _o("cam_layers")),
    Row("CAM normalisation", "per image by its max (DESIGN.md section 2, step 3)",
        "datautil.layer_salient_maps: one min-max over the batch (both views) per layer", _o("cam_norm")),
    Row("CAM schedule", "\"after each epoch\": the activated areas found in one epoch are masked in the next "
        "(the method's description)", "every step, a separate forward + backward in train mode (BatchNorm "
        "running statistics move once more)", _o("cam_schedule")),
    Row("box size", "gamma_i ~ U(0.1, 0.5) per image, sides round(gamma H) (step 4)",
        "datautil.salient_cutmix: lam0 = 0.5 + 0.4 Beta(1,1) once per batch; rand_bbox: side int(H sqrt(1 - lam0))",
        _o("box_share", "box_draw", "gamma_min", "gamma_max")),
    Row("box position", "the window of highest CAM sum inside the image (step 5)", "datautil.rand_bbox: centred "
        "on the hottest pixel, [c - cut // 2, c + cut // 2) clipped to the border", _o("box_position")),
    Row("partner", "a random other image (step 6)", "torch.randperm (may be the image itself); unused by the "
        "noise paste", fixed="random derangement (never itself), used by --paste partner"),
    Row("paste", "the partner resized bilinearly into the box (step 7)", "datautil.salient_cutmix: "
        "x[:, box] = torch.rand(h, w) (uniform noise, all channels alike)", _o("paste")),
    Row("l_mix roles", "anchor the mixed view, positive the second view, negatives the other clean images "
        "(step 9)", "main_supcon_old.py criterion1(features, features_positive=mixed): anchors clean z1, z2; "
        "positives f(v2), f(m) of a forward of [m; v2]", _o("mix_anchors")),
    Row("l_mix weight", "w_i = box area / image area (gamma^2, step 8)", "datautil.salient_cutmix: new_lam = "
        "1 - cut_h cut_w / (H W), one per batch", _o("mix_weight")),
    # evaluation
    Row("scoring k", "Algorithm 1, k = 10", "main_testing.py --K 3", _o("topk")),
    Row("open-set score", "max_c s_c (Algorithm 1)", "main_testing.KNN_logits: s_c / sum_c s_c", _o("score")),
    Row("test sets", "the protocols' test sets", "feature_reading.py breaks: the first 501 (CIFAR-10 unknown), "
        "51 (CIFAR+N unknown), ... images per class", _o("test_subsample")),
    Row("metrics", "AUROC; OOD: TNR@TPR95, DTACC, AUIN, AUOUT", "util.AUROC (sklearn roc_curve + auc)",
        fixed="same (evaluation/metrics.py); no option"),
    Row("corruptions", "CIFAR-10-C / Tiny-ImageNet-C, 15 types x 5 severities", "datautil.get_curruption_"
        "datasets: the released files", fixed="generated with the benchmark's parameters, or evaluate "
        "--corruption-data (released CIFAR-10-C)"),
    Row("intrinsic dimension", "TwoNN", "ID.py id_2nn (fraction 0.9)", fixed="TwoNN, largest 10 % of ratios "
        "discarded; no option"),
    Row("activated area S_M", "share of CAM pixels above tau, tau in 1e-5..1e-3",
        "activation_map_stats.py: count_nonzero(cam > threshold)", fixed="evaluate --area-range"),
    Row("MoCo queue / temperature", "K = 8196 (section 4.5); temperature not stated (MoCo v2: 0.2)",
        "train_imagenet_moco*.sh --K 8192; MoCoResNet: logits / opt.temp (0.05)",
        _o("moco_queue", "moco_temperature"), method="moco"),
)

# the per-protocol table's columns: (heading, Config field, method resolved for)
PROTOCOL_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("epochs", "epochs", "supcon+simclr"),
    ("epochs (simclr, moco)", "epochs", "simclr"),
    ("image size", "image_size", "supcon+simclr"),
    ("views", "views", "supcon+simclr"),
    ("aug", "aug", "supcon+simclr"),
    ("theta", "theta", "supcon+simclr"),
    ("lam", "lam", "supcon+simclr"),
    ("topk", "topk", "supcon+simclr"),
    ("score", "score", "supcon+simclr"),
    ("normalisation", "normalisation", "supcon+simclr"),
    ("test subsample", "test_subsample", "supcon+simclr"),
)


def resolve(preset: str, protocol: str, method: str = "supcon+simclr") -> Config:
    """What ``--preset preset --protocol protocol --method method`` resolves to (no other option given)."""
    return merge({"preset": preset, "protocol": protocol, "method": method})


def _value(cfg: Config, keys: tuple[str, ...]) -> str:
    return " / ".join(str(getattr(cfg, key)) for key in keys)


def preset_cell(preset: str, row: Row) -> str:
    """The value(s) ``preset`` gives the row's options, over every protocol: the most common value and the
    protocols that differ from it."""
    if not row.keys:
        return row.fixed
    values = {protocol: _value(resolve(preset, protocol, row.method), row.keys) for protocol in PROTOCOL_NAMES}
    common = Counter(values.values()).most_common(1)[0][0]
    exceptions: dict[str, list[str]] = {}
    for protocol, value in values.items():
        if value != common:
            exceptions.setdefault(value, []).append(protocol)
    if not exceptions:
        return f"`{common}`"
    parts = [f"`{value}` ({', '.join(protocols)})" for value, protocols in exceptions.items()]
    return "; ".join(parts + [f"`{common}` (others)"])


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_choices() -> str:
    """The table of choices: one row per choice, both preset columns computed."""
    lines = ["| choice | paper | published code | `--preset paper` | `--preset official` | option |",
             "|---|---|---|---|---|---|"]
    for row in ROWS:
        option = ", ".join(f"`--{key.replace('_', '-')}`" for key in row.keys) or "—"
        cells = [row.choice, row.paper, row.code, *(preset_cell(p, row) for p in PRESET_NAMES), option]
        lines.append("| " + " | ".join(_escape(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def render_protocols() -> str:
    """Every protocol under every preset: the per-protocol options (what tests/test_presets.py checks)."""
    lines = ["| protocol | preset | " + " | ".join(heading for heading, _, _ in PROTOCOL_COLUMNS) + " |",
             "|---|---|" + "---|" * len(PROTOCOL_COLUMNS)]
    for protocol in PROTOCOL_NAMES:
        for preset in PRESET_NAMES:
            cells = [protocol, preset] + [str(getattr(resolve(preset, protocol, method), key))
                                          for _, key, method in PROTOCOL_COLUMNS]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
