"""``--preset paper`` and ``--preset official``: every option's value per protocol, from one table.

A preset is applied per protocol (and, for the epochs, per ``--method``) before the user's own options,
which always win (runs/config.py ``merge``). The values here are the only source of the presets: the
per-protocol table and the preset columns of docs/FIDELITY.md are rendered from them (runs/fidelity.py,
``python -m tools.fidelity_doc``), and tests/test_presets.py checks that the command line resolves to
what that document says.

- ``paper``: the paper's text where it speaks (DESIGN.md section 2's reading of it), the published scripts
  (gawainxu/GradMix ``train_*.sh``) where it is silent. Epochs per protocol as the published scripts: 600
  for CIFAR-10, CIFAR+10/+50, Tiny ImageNet and the closed-set and OOD protocols built on them, 300 for
  SVHN, 10 for MNIST; 200 for the self-supervised linear-evaluation runs (``--method simclr|moco``, the
  paper's section 4.5). MNIST: no SimCLR augmentation, the published +-5 degree rotation only; SVHN: the
  standard SimCLR views with the horizontal flip. ``digits`` keeps its small CPU preset.
- ``official``: the paper preset plus the published code's GradMix and evaluation (docs/FIDELITY.md lists
  each choice with the file and function it comes from).
"""

from __future__ import annotations

from typing import Any

from fastgradmix.data.published import PUBLISHED_CAPS, PUBLISHED_NORMALISATION

__all__ = ["OFFICIAL_GRADMIX", "PRESET_NAMES", "PROTOCOL_NAMES", "SELF_SUPERVISED_METHODS", "preset_values"]

PRESET_NAMES = ("paper", "official")
SELF_SUPERVISED_METHODS = ("simclr", "moco")  # section 4.5's linear-evaluation runs: 200 epochs

CIFAR_FAMILY = ("cifar10", "cifar+10", "cifar+50", "cifar10-closed", "cifar100-closed", "cifar10-vs-cifar100",
                "cifar10-vs-svhn")
TINYIMAGENET_FAMILY = ("tinyimagenet", "tinyimagenet100-closed")
PROTOCOL_NAMES = ("digits", "mnist", "svhn", *CIFAR_FAMILY, *TINYIMAGENET_FAMILY, "imagefolder")

# digits is sized to finish in a few minutes on 2 CPU cores: 16 px images and a quarter-width ResNet-18 (its
# 8x8 originals carry little more); its views stay the data's own (crop only), as before the presets.
DIGITS = dict(image_size=16, width=16, epochs=30, batch_size=128, cam_layers="conv4_2", eval_batch_size=1024,
              moco_queue=512)  # 754 training images: a queue under one epoch

# The paper preset, per protocol. theta/lam: the paper gives lambda 1.2 (CIFAR-10) and 1.0 (Tiny ImageNet)
# with theta 1 (DESIGN.md section 2); for MNIST and SVHN it is silent and the published scripts speak
# (train_mnist.sh: --method_gama 1.0 --method_lam 3.0; train_svhn.sh: --method_gama 0 --method_lam 1.0).
PAPER: dict[str, dict[str, Any]] = {
    "digits": DIGITS,
    # MNIST: no SimCLR augmentation and no GradMix; 28 px digits upsampled to 32 px for the CIFAR stem
    "mnist": dict(image_size=32, epochs=10, views="rotate", aug="none", theta=1.0, lam=3.0),
    "svhn": dict(image_size=32, epochs=300, views="simclr", theta=0.0, lam=1.0),
    **{name: dict(image_size=32, epochs=600, views="simclr", theta=1.0, lam=1.2) for name in CIFAR_FAMILY},
    **{name: dict(image_size=64, epochs=600, views="simclr", theta=1.0, lam=1.0) for name in TINYIMAGENET_FAMILY},
    "imagefolder": dict(image_size=64),
}

# The published code's GradMix, scoring and optimisation, on top of the paper preset (every protocol).
OFFICIAL_GRADMIX: dict[str, Any] = dict(
    cam_loss="self-supervised",  # datautil.parallel_gradients: SupConLoss without labels (SimCLR) of both views
    cam_norm="batch",  # datautil.layer_salient_maps: one min-max over the whole batch per layer
    box_share="per-batch",  # datautil.salient_cutmix: one lam per batch
    box_draw="area",  # lam0 = 0.5 + 0.4 U, side int(H sqrt(1 - lam0)): area fraction U(0.1, 0.5)
    box_position="hottest",  # datautil.rand_bbox: centred on the hottest pixel, clipped to the border
    paste="noise",  # x[:, box] = torch.rand(h, w)
    mix_anchors="clean",  # criterion1(features, features_positive=mixed_features)
    mix_weight="remaining",  # new_lam = 1 - box area / image area
    loss_scale="tau/0.07",  # losses.SupConLoss: -(temperature / base_temperature) * mean_log_prob_pos
    lr_schedule="epoch-cosine",  # util.adjust_learning_rate with --cosine True --lr_decay_rate 0.8
    topk=3,  # main_testing.py --K 3
    score="normalized",  # main_testing.KNN_logits: class scores divided by their sum
    moco_queue=8192,  # train_imagenet_moco*.sh --K 8192
    moco_temperature=0.05,  # networks/resnet_big.MoCoResNet: logits / opt.temp, --temp 0.05
)
# where the published code has values: datautil.mean_mapping / std_mapping (MNIST: none), and
# feature_reading.py's per-class caps (data/published.py)


def preset_values(preset: str, protocol: str, method: str = "supcon+simclr") -> dict[str, Any]:
    """The options ``--preset`` sets for ``protocol`` trained with ``method`` (before the user's own)."""
    if preset not in PRESET_NAMES:
        raise ValueError(f"unknown preset {preset!r}; choose one of {PRESET_NAMES}")
    values = dict(PAPER.get(protocol, {}))
    if method in SELF_SUPERVISED_METHODS and protocol not in ("digits", "imagefolder"):
        values["epochs"] = 200
    if preset == "official":
        official = dict(OFFICIAL_GRADMIX)
        if protocol == "digits":  # the small CPU preset's queue stays under one epoch of its 754 images
            official.pop("moco_queue")
        if method == "moco":
            # published MoCo: the CAM and the mix term come from InfoNCE with the mixed view as query
            # (main_supcon.py, MoCo branch); SupConLoss's tau/0.07 is not applied to a cross-entropy
            official.update(mix_anchors="mixed", loss_scale="none")
        official["test_subsample"] = "published" if protocol in PUBLISHED_CAPS else "none"
        official["normalisation"] = "published" if protocol in PUBLISHED_NORMALISATION else "dataset"
        values.update(official)
    return values
