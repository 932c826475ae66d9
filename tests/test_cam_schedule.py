"""``--cam-schedule epoch``: each image's GradMix box is found in its previous epoch and pasted in the next.

Checked through the dataset rows the loaders yield: the box pasted into image i in epoch e + 1 is exactly the
one found for image i in epoch e (or earlier, when i fell in a dropped remainder; none before its first epoch);
the first epoch trains L_con alone; the first step's boxes equal the step schedule's (the same CAM of L_con
from the same weights and draws); the table survives a resume exactly and merges across torchrun ranks; the
step reads nothing back to the host.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.distributed as torch_dist
from gloo_group import run_gloo_workers
from host_reads import ForbidHostReads

from fastgradmix.common.errors import UserError
from fastgradmix.data.augment import AugmentSpec
from fastgradmix.data.loaders.device_resident import DeviceResidentLoader
from fastgradmix.gradmix.augment import CamBoxes, paste_boxes
from fastgradmix.gradmix.ops import resolve_ops
from fastgradmix.models import build_model
from fastgradmix.runs.config import Config, validate
from fastgradmix.train import main
from fastgradmix.training.mixed_views.box_table import BoxTable
from fastgradmix.training.step import TrainStep, build_optimizer

CPU = torch.device("cpu")
N_IMAGES, BATCH = 44, 8  # 5 steps per epoch; 4 images are dropped each epoch (a different 4 every epoch)


def _config(**overrides) -> Config:
    values = dict(arch="resnet18", width=8, image_size=16, cam_layers="conv4_2", temperature=0.5, batch_size=BATCH,
                  cam_schedule="epoch")
    values.update(overrides)
    return Config(**values)


def _step(cfg: Config, num_images: int = N_IMAGES) -> TrainStep:
    torch.manual_seed(0)
    model = build_model("resnet18", 3, width=8)
    return TrainStep(model, build_optimizer(model, 1e-3, 0.0), cfg, CPU, num_images=num_images)


def _loader(seed: int = 3) -> DeviceResidentLoader:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (N_IMAGES, 3, 20, 20), dtype=torch.uint8, generator=generator)
    labels = torch.arange(N_IMAGES) % 3
    spec = AugmentSpec(size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return DeviceResidentLoader(images, labels, spec, BATCH, seed, CPU)


def _box(boxes, row: int) -> tuple:
    return tuple(int(getattr(boxes, name)[row]) for name in ("top", "left", "box_h", "box_w")) + (
        float(boxes.weights[row]),)


@pytest.mark.parametrize("overrides", [dict(), dict(cam_grad="detached"), dict(box_position="hottest")])
def test_the_box_pasted_in_the_next_epoch_is_the_one_found_for_that_image(overrides):
    step = _step(_config(**overrides))
    mixer = step.mixing.mixer
    found_calls, pasted_calls = [], []
    find_boxes, paste = mixer.find_boxes, mixer.paste
    mixer.find_boxes = lambda images, generator=None: found_calls.append(find_boxes(images, generator)) or \
        found_calls[-1]
    mixer.paste = lambda images, boxes, generator=None: pasted_calls.append(boxes) or paste(images, boxes, generator)

    latest: dict[int, tuple] = {}  # the reference: image row -> the last box found for it
    loader = _loader()
    for epoch in range(3):
        step.begin_epoch(epoch)
        seen = set()
        for view1, view2, labels, rows in loader.epoch(epoch):
            found_calls.clear(), pasted_calls.clear()
            losses = step(view1, view2, labels, torch.Generator().manual_seed(epoch), rows)
            assert len(found_calls) == 1  # every step places the boxes of its images' next epoch
            if epoch == 0:  # no box is kept yet: L_con alone, no mixed view
                assert pasted_calls == [] and float(losses["mix"]) == 0.0
            else:
                (used,) = pasted_calls
                for position, row in enumerate(rows.tolist()):
                    expected = latest.get(row, (0, 0, 0, 0, 0.0))  # never seen before: nothing pasted, weight 0
                    assert _box(used, position) == pytest.approx(expected), (epoch, row)
            for position, row in enumerate(rows.tolist()):
                latest[row] = _box(found_calls[0], position)
            seen.update(rows.tolist())
        step.end_epoch()
        assert len(seen) == N_IMAGES - N_IMAGES % BATCH


def test_an_image_without_a_kept_box_is_left_as_it_is():
    """lookup of rows never recorded: sides 0 and weight 0, and the paste leaves those images unchanged."""
    table = BoxTable(6, CPU)
    table.record(torch.tensor([1, 4]), CamBoxes(torch.tensor([2, 0]), torch.tensor([1, 3]), torch.tensor([3, 2]),
                                                torch.tensor([2, 4]), torch.tensor([0.25, 0.5])))
    boxes = table.lookup(torch.tensor([4, 0, 1]))
    assert [_box(boxes, i) for i in range(3)] == [(0, 3, 2, 4, 0.5), (0, 0, 0, 0, 0.0), (2, 1, 3, 2, 0.25)]
    images = torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    mixed = paste_boxes(images, boxes, torch.Generator().manual_seed(1), resolve_ops("reference", CPU))
    assert torch.equal(mixed.images[1], images[1])  # row 0 of the table was never recorded
    for i, (top, left, h, w) in ((0, (0, 3, 2, 4)), (2, (2, 1, 3, 2))):
        outside = torch.ones(8, 8, dtype=torch.bool)
        outside[top:top + h, left:left + w] = False
        assert torch.equal(mixed.images[i][:, outside], images[i][:, outside])
        assert not torch.equal(mixed.images[i], images[i])


def test_the_first_step_places_the_boxes_the_step_schedule_places():
    """Epoch 0's first step: the same weights, the CAM of L_con alone and the same first draws (the box sides)
    as the step schedule, whose boxes tests/test_official_step.py checks against the published code."""
    view1, view2, labels, rows = next(iter(_loader().epoch(0)))
    placed = {}
    for schedule in ("step", "epoch"):
        step = _step(_config(cam_schedule=schedule))
        step.begin_epoch(0)
        mixer = step.mixing.mixer
        if schedule == "step":
            def recorded_mix(images, loss=None, generator=None, mix=mixer.mix):
                return placed.setdefault("step", mix(images, loss, generator))
            mixer.mix = recorded_mix
        step(view1, view2, labels, torch.Generator().manual_seed(5), rows)
        if schedule == "epoch":
            placed["epoch"] = step.mixing.table.lookup(rows)
    for row in range(BATCH):
        assert _box(placed["epoch"], row) == pytest.approx(_box(placed["step"], row))


@pytest.mark.parametrize("cam_grad", ["exact", "detached"])
def test_the_step_reads_nothing_back(cam_grad):
    step = _step(_config(cam_grad=cam_grad))
    loader = _loader()
    for epoch in (0, 1):
        step.begin_epoch(epoch)
        batches = list(loader.epoch(epoch))
        step(*batches[0][:3], torch.Generator().manual_seed(0), batches[0][3])  # Adam's state made here
        with ForbidHostReads():
            for view1, view2, labels, rows in batches[1:3]:
                losses = step(view1, view2, labels, torch.Generator().manual_seed(0), rows)
        step.end_epoch()
    assert torch.isfinite(losses["loss"]) and float(losses["mix"]) > 0


def test_the_table_round_trips_and_refuses_another_size():
    table = BoxTable(5, CPU)
    table.record(torch.tensor([3]), CamBoxes(*(torch.tensor([v]) for v in (1, 2, 3, 4)), torch.tensor([0.5])))
    other = BoxTable(5, CPU)
    other.load_state_dict(table.state_dict())
    assert _box(other.lookup(torch.tensor([3])), 0) == (1, 2, 3, 4, 0.5)
    with pytest.raises(ValueError, match="box table top is \\(5,\\), this run needs \\(6,\\)"):
        BoxTable(6, CPU).load_state_dict(table.state_dict())


def _merge_body(rank: int, result_path: str) -> None:
    """Rank r records rows r, r + 2, ... of a 7-image table (its shard of the epoch), then the ranks merge."""
    table = BoxTable(7, CPU)
    rows = torch.arange(rank, 7, 2)
    values = rows + 1
    table.record(rows, CamBoxes(values, values * 2, values + 3, values + 4, values.float() / 10))
    table.merge_ranks()
    torch.save(table.state_dict(), f"{result_path}.{rank}")


def test_the_ranks_merge_their_shards_rows(tmp_path):
    run_gloo_workers(_merge_body, (str(tmp_path / "table"),), start_method="fork")
    assert not torch_dist.is_initialized()
    expected = BoxTable(7, CPU)  # one process recording every row
    rows = torch.arange(7)
    values = rows + 1
    expected.record(rows, CamBoxes(values, values * 2, values + 3, values + 4, values.float() / 10))
    for rank in (0, 1):
        merged = torch.load(tmp_path / f"table.{rank}", weights_only=True)
        for name, tensor in expected.state_dict().items():
            assert torch.equal(merged[name], tensor), (rank, name)


TINY = ["--width", "8", "--image-size", "16", "--batch-size", "64", "--cam-layers", "conv4_2", "--no-progress",
        "--eval-batch-size", "256", "--train-subset", "200", "--loader", "device", "--cam-schedule", "epoch"]


def test_a_resumed_run_pastes_the_same_boxes_and_ends_the_same(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    main(TINY + ["--epochs", "3", "--out", str(straight)])
    main(TINY + ["--epochs", "3", "--out", str(resumed), "--stop-after", "2"])
    main(["--resume", "--out", str(resumed), "--no-progress"])
    a, b = (torch.load(run / "last.pt", weights_only=True) for run in (straight, resumed))
    assert a["cam_boxes"]["known"].sum() > 0
    for name in a["cam_boxes"]:
        assert torch.equal(a["cam_boxes"][name], b["cam_boxes"][name]), name
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert json.loads((straight / "results.json").read_text())["auroc"] == \
        json.loads((resumed / "results.json").read_text())["auroc"]
    mix = [json.loads(line)["mix"] for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert mix[0] == 0.0 and mix[-1] > 0  # epoch 0 trains L_con alone
    assert json.loads((straight / "config.json").read_text())["cam_schedule"] == "epoch"


@pytest.mark.parametrize("overrides,message", [
    (dict(aug="mixup"), "--cam-schedule epoch keeps the boxes of a CAM-placed view"),
    (dict(cam_loss="self-supervised"), "--cam-loss self-supervised needs --cam-schedule step"),
])
def test_combinations_without_meaning_are_refused(overrides, message):
    with pytest.raises(UserError, match=message):
        validate(_config(**overrides))


def test_the_table_costs_13_bytes_per_image():
    table = BoxTable(1000, CPU)
    stored = sum(t.numel() * t.element_size() for t in table.state_dict().values())
    assert stored == 13 * 1000
