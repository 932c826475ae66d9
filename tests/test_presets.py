"""--preset paper / official: the command line resolves every protocol to what docs/FIDELITY.md documents (the
per-protocol table parsed from the file), the document is what the presets render, user options win, and the
published schedule and test subsets follow the published code's formulas."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from fastgradmix.common.errors import UserError
from fastgradmix.data.openset import OpenSetData
from fastgradmix.data.protocols import PROTOCOLS
from fastgradmix.data.published import published_normalisation, published_test_subset
from fastgradmix.runs.config import Config, parse_args, resolved_score, validate
from fastgradmix.runs.fidelity import ROWS
from fastgradmix.training.schedule import learning_rate

ROOT = Path(__file__).resolve().parents[1]
FIDELITY = ROOT / "docs" / "FIDELITY.md"


def _protocol_table() -> list[dict[str, str]]:
    """The generated per-protocol table of docs/FIDELITY.md, as one dict per row (heading -> cell)."""
    text = FIDELITY.read_text()
    block = text.split("<!-- generated: protocols -->\n")[1].split("<!-- end generated: protocols -->")[0]
    lines = [line for line in block.strip().splitlines() if line.startswith("|")]
    headings = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(headings, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
            for line in lines[2:]]


# heading of the table -> (Config field, extra command-line options)
COLUMNS = {"epochs": ("epochs", []), "epochs (simclr, moco)": ("epochs", ["--method", "simclr"]),
           "image size": ("image_size", []), "views": ("views", []), "aug": ("aug", []), "theta": ("theta", []),
           "lam": ("lam", []), "topk": ("topk", []), "score": ("score", []), "normalisation": ("normalisation", []),
           "test subsample": ("test_subsample", [])}
TABLE = _protocol_table()


def test_the_document_is_what_the_presets_render():
    spec = importlib.util.spec_from_file_location("fidelity_doc", ROOT / "tools" / "fidelity_doc.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["--check"]) == 0
    # every protocol of the registry, under both presets
    assert sorted((row["protocol"], row["preset"]) for row in TABLE) == sorted(
        (protocol, preset) for protocol in PROTOCOLS for preset in ("paper", "official"))


@pytest.mark.parametrize("row", TABLE, ids=lambda row: f"{row['protocol']}-{row['preset']}")
def test_the_command_line_resolves_to_the_documented_values(row):
    for heading, (field, extra) in COLUMNS.items():
        argv = ["--protocol", row["protocol"], "--preset", row["preset"], *extra]
        cfg, _ = parse_args(argv)
        assert str(getattr(cfg, field)) == row[heading], (heading, argv)
        assert cfg.preset == row["preset"]


def test_every_choice_of_the_table_names_real_options():
    fields = set(Config.__dataclass_fields__)
    for row in ROWS:
        assert set(row.keys) <= fields, row.choice
        assert row.keys or row.fixed, row.choice  # a row without an option says what fastgradmix does


def test_the_default_is_the_paper_preset_and_digits_keeps_its_cpu_preset():
    cfg, _ = parse_args([])
    assert cfg.preset == "paper" and cfg.protocol == "digits"
    assert (cfg.image_size, cfg.width, cfg.epochs, cfg.batch_size, cfg.cam_layers, cfg.views) == (
        16, 16, 30, 128, "conv4_2", "auto")
    # the paper preset leaves the GradMix step in the paper's form
    assert (cfg.cam_loss, cfg.cam_norm, cfg.box_share, cfg.box_draw, cfg.box_position, cfg.paste, cfg.mix_anchors,
            cfg.mix_weight, cfg.loss_scale, cfg.lr_schedule, cfg.topk, cfg.score, cfg.denominator) == (
        "objective", "image", "per-image", "side", "window", "partner", "mixed", "area", "none", "cosine", 10,
        "auto", "all")
    assert resolved_score(cfg.method, cfg.score) == "sum"  # auto: Algorithm 1's sum for the contrastive methods


def test_user_options_win_over_the_preset_and_the_config_records_both():
    cfg, explicit = parse_args(["--protocol", "mnist", "--preset", "official", "--epochs", "3", "--paste",
                                "partner", "--topk", "7"])
    assert (cfg.epochs, cfg.paste, cfg.topk) == (3, "partner", 7)
    assert (cfg.lam, cfg.views, cfg.cam_norm, cfg.score) == (3.0, "rotate", "batch", "normalized")  # the preset's
    record = json.loads(json.dumps(cfg.to_dict()))  # what config.json holds
    assert record["preset"] == "official" and record["epochs"] == 3 and record["cam_norm"] == "batch"
    assert set(record) == set(Config.__dataclass_fields__)


def test_help_shows_the_protocols_resolved_defaults(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--protocol", "mnist", "--preset", "official", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "training epochs (default 10)" in text
    assert "(default 'rotate')" in text and "(default 'normalized')" in text


@pytest.mark.parametrize("overrides,message", [
    (["--cam-loss", "self-supervised", "--cam-grad", "detached"], "--cam-grad exact"),
    (["--method", "moco", "--mix-anchors", "clean"], "--mix-anchors mixed"),
    (["--rotate-degrees", "200"], "--rotate-degrees"),
])
def test_impossible_combinations_are_one_line_errors(overrides, message):
    cfg, _ = parse_args(["--protocol", "cifar10", *overrides])
    with pytest.raises(UserError, match=message):
        validate(cfg)


def test_official_moco_keeps_the_mixed_query_and_the_published_queue():
    cfg, _ = parse_args(["--protocol", "cifar10", "--preset", "official", "--method", "moco"])
    validate(cfg)
    assert (cfg.mix_anchors, cfg.loss_scale, cfg.moco_queue, cfg.moco_temperature, cfg.epochs) == (
        "mixed", "none", 8192, 0.05, 200)


def test_epoch_cosine_is_the_published_adjust_learning_rate():
    base, epochs, steps = 1e-3, 7, 5
    for epoch in range(epochs):
        # util.adjust_learning_rate with --cosine True --lr_decay_rate 0.8, written out
        eta_min = base * (0.8 ** 3)
        expected = eta_min + (base - eta_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2
        for step in range(epoch * steps, (epoch + 1) * steps):  # constant within the epoch
            assert learning_rate("epoch-cosine", base, step, steps, epochs) == pytest.approx(expected, rel=1e-12)
    assert learning_rate("cosine", base, 0, steps, epochs) == base
    assert learning_rate("cosine", base, steps * epochs, steps, epochs) == pytest.approx(0.0, abs=1e-15)


def _open_set(protocol: str, train_per_class: list[int], known_per_class: list[int],
              unknown_per_class: list[int]) -> OpenSetData:
    def rows(counts, offset):
        return torch.cat([torch.zeros(0, dtype=torch.int64)] + [torch.full((count,), offset + c, dtype=torch.int64)
                                                                for c, count in enumerate(counts)])
    generator = torch.Generator().manual_seed(0)
    train = rows(train_per_class, 0)[torch.randperm(sum(train_per_class), generator=generator)]
    known = rows(known_per_class, 0)
    unknown = rows(unknown_per_class, 0)[torch.randperm(sum(unknown_per_class), generator=generator)]
    test_labels = torch.cat([known, torch.full_like(unknown, -1)])
    test_images = torch.arange(test_labels.shape[0], dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 2, 2)
    return OpenSetData(protocol, 0, torch.zeros(train.shape[0], 3, 2, 2, dtype=torch.uint8), train,
                       test_images.contiguous(), test_labels, [f"k{c}" for c in range(len(known_per_class))],
                       [f"u{c}" for c in range(len(unknown_per_class))], (0.5,) * 3, (0.5,) * 3,
                       unknown_test_classes=torch.cat([torch.full_like(known, -1), unknown]))


def _first_per_class_loop(labels: list[int], cap: int) -> list[bool]:
    """feature_reading.py's loop per class: stop once the index within the class exceeds cap - 1."""
    seen: dict[int, int] = {}
    keep = []
    for label in labels:
        keep.append(seen.get(label, 0) < cap)
        seen[label] = seen.get(label, 0) + 1
    return keep


def test_published_test_subset_keeps_the_first_n_of_every_class():
    # CIFAR+10: at most 5001 bank, 501 known and 51 unknown test images per class
    data = _open_set("cifar+10", [5003, 40, 5010, 7], [600, 500, 502, 3], [60, 51, 52, 10, 9])
    subset = published_test_subset(data)
    assert torch.bincount(subset.train_labels).tolist() == [5001, 40, 5001, 7]
    known = subset.test_labels >= 0
    assert torch.bincount(subset.test_labels[known]).tolist() == [501, 500, 501, 3]
    assert torch.bincount(subset.unknown_test_classes[~known]).tolist() == [51, 51, 51, 10, 9]
    # which rows: the first ones of each class in stored order, as a loop over the rows keeps them
    train_keep = _first_per_class_loop(data.train_labels.tolist(), 5001)
    assert torch.equal(subset.train_labels, data.train_labels[torch.tensor(train_keep)])
    classes = torch.where(data.test_labels >= 0, data.test_labels, 100 + data.unknown_test_classes).tolist()
    test_keep = [k if c < 100 else u for c, k, u in zip(classes, _first_per_class_loop(classes, 501),
                                                        _first_per_class_loop(classes, 51), strict=True)]
    assert torch.equal(subset.test_images, data.test_images[torch.tensor(test_keep)])


def test_published_subset_and_normalisation_refuse_protocols_without_values():
    data = _open_set("cifar10-closed", [3], [2], [])
    with pytest.raises(UserError, match="no test subsets for cifar10-closed"):
        published_test_subset(data)
    assert published_normalisation(data).std == (0.2023, 0.1994, 0.2010)  # CIFAR-10's published constants
    with pytest.raises(UserError, match="no constants for digits"):
        published_normalisation(_open_set("digits", [3], [2], [1]))


def test_run_data_under_the_official_preset_on_a_cifar_plus_layout(synthetic_data):
    """load_run_data applies the published constants; the protocol records each unknown test image's class,
    which the published per-class caps need (the miniature layout is below every cap: nothing is dropped)."""
    from fastgradmix.runs.rebuild import evaluation_subset, load_run_data

    root, _ = synthetic_data
    cfg, _ = parse_args(["--protocol", "cifar+10", "--preset", "official", "--data-root", str(root)])
    data = load_run_data(cfg, progress=False)
    assert (data.mean, data.std) == ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    unknown = data.test_labels < 0
    stamped = data.test_images[unknown][:, 0, 0, 0].long()  # each image carries its CIFAR-100 class
    named = [data.unknown_classes[i] for i in data.unknown_test_classes[unknown].tolist()]
    from dataset_writers import CIFAR100_NAMES
    assert named == [CIFAR100_NAMES[c] for c in stamped.tolist()]
    assert (data.unknown_test_classes[~unknown] == -1).all()
    subset = evaluation_subset(data, cfg.test_subsample)
    assert torch.equal(subset.test_images, data.test_images) and torch.equal(subset.train_labels, data.train_labels)
