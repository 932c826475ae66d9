"""model.json's schema and the model folder's limits (deploy/model_schema.py, deploy/model_folder.py), the
pixel limit and path escaping of the predictors, checked on small folders and files without a trained model
(test_native.py runs the same cases through both predictors)."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from image_headers import jpeg_header, png_header
from model_cases import CASES, expected_message
from PIL import Image

from fastgradmix.common.errors import UserError
from fastgradmix.common.schema import check_portable, parse_json_text
from fastgradmix.data.readers.pixel_limit import max_image_pixels
from fastgradmix.deploy.image_inputs import ImageProblem, list_images, read_image
from fastgradmix.deploy.model_folder import BANK_FILE, META_FILE, read_model_dir, write_bank
from fastgradmix.deploy.printable import printable


def fake_model_dir(folder):
    """A valid model folder of 2 classes and 4 bank rows (its program file is never loaded here)."""
    folder.mkdir()
    write_bank(folder / BANK_FILE, F.normalize(torch.randn(4, 3), dim=1), torch.tensor([0, 1, 1, 0]), 2)
    (folder / "model.cpu.pt2").write_bytes(b"not loaded by read_model_dir")
    meta = {"format": "fastgradmix-model", "format_version": 1, "class_names": ["a", "b"],
            "preprocessing": {"image_size": 16, "channels": 1, "mean": [0.5], "std": [0.5]},
            "scoring": {"topk": 10, "threshold": 7.5, "tpr": 0.95},
            "bank": {"file": BANK_FILE, "size": 4, "feature_dim": 3}, "programs": {"cpu": "model.cpu.pt2"}}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2))
    return folder


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_each_damaged_model_folder_is_its_one_line(tmp_path, case):
    folder = fake_model_dir(tmp_path / "m")
    case.damage(folder)
    with pytest.raises(UserError) as caught:
        read_model_dir(folder).program_path("cpu")
    assert str(caught.value) == expected_message(case, folder, printable)


def test_a_threshold_that_underflows_reads_as_zero(tmp_path):
    folder = fake_model_dir(tmp_path / "m")
    text = (folder / META_FILE).read_text().replace('"threshold": 7.5', '"threshold": 1e-400')
    (folder / META_FILE).write_text(text)
    assert read_model_dir(folder).threshold == 0.0


def test_the_limits_admit_their_edges(tmp_path):
    folder = fake_model_dir(tmp_path / "m")
    meta = json.loads((folder / META_FILE).read_text())
    meta["preprocessing"].update(image_size=1024, std=[1e-6], mean=[1])
    meta["scoring"].update(topk=2**31 - 1, threshold=-1e300, tpr=0)
    meta["class_names"] = ["d\u00efgit \u2713", "emoji \U0001f642"]
    (folder / META_FILE).write_text(json.dumps(meta))
    model = read_model_dir(folder)
    assert model.preprocessing.image_size == 1024 and model.topk == 2**31 - 1 and model.class_names[1] == "emoji 🙂"


@pytest.mark.parametrize("document, why", [
    (b'{"a": 1e400}', "number out of range"),
    (b'[-1e400]', "number out of range"),
    (b'[9223372036854775808]', "integer out of 64-bit range"),
    (b'{"a": [-9223372036854775809]}', "integer out of 64-bit range"),
    (b'"\\ud800"', "lone surrogate"),
    (b'{"\\udc00": 1}', "lone surrogate"),
])
def test_check_portable_refuses_what_cpp_would_read_differently(document, why):
    with pytest.raises(UserError, match=f"^f: not valid JSON \\({why}"):
        check_portable(parse_json_text(document, "f"), "f")


def test_check_portable_keeps_what_both_read_alike():
    document = {"a": [9223372036854775807, -9223372036854775808, 1e-400, 5e-324, "\ud83d\ude42"]}
    text = json.dumps(document).encode()
    assert check_portable(parse_json_text(text, "f"), "f") == json.loads(text)


@pytest.mark.parametrize("path, shown", [
    ("plain/dïgit ✓.png", "plain/dïgit ✓.png"),
    ("new\nline.png", "new\\nline.png"),
    ("tab\t\r.png", "tab\\t\\r.png"),
    ("back\\slash.png", "back\\\\slash.png"),
    ("bell\x07\x7f\x85.png", "bell\\x07\\x7f\\x85.png"),
    (os.fsdecode(b"bad\xff\xc3.png"), "bad\\udcff\\udcc3.png"),
])
def test_printable_escapes_what_would_break_a_line(path, shown):
    assert printable(path) == shown and "\n" not in printable(path)


# ---- images: the pixel limit from the header ------------------------------------------------------------


def test_images_over_the_pixel_limit_are_refused_from_the_header(tmp_path):
    limit = max_image_pixels()
    assert limit == Image.MAX_IMAGE_PIXELS == 89478485
    cases = {"40000.png": (png_header(40000, 40000), 40000 * 40000),
             "million.png": (png_header(1000000, 1000000), 10**12),
             "over_by_one.png": (png_header(1, limit + 1), limit + 1),
             "over_by_one_rgb.png": (png_header(limit + 1, 1, color_type=2), limit + 1),
             "65000.jpg": (jpeg_header(65000, 65000), 65000 * 65000)}
    for name, (data, pixels) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageProblem) as caught:
            read_image(str(tmp_path / name))
        assert str(caught.value) == (f"image has {pixels} pixels, more than the limit of {limit} (PIL's "
                                     "decompression-bomb limit)"), name


def test_an_image_at_the_pixel_limit_is_decoded_not_refused(tmp_path):
    (tmp_path / "at_limit.png").write_bytes(png_header(max_image_pixels(), 1))  # truncated: fails decoding
    with pytest.raises(ImageProblem, match="^cannot decode image"):
        read_image(str(tmp_path / "at_limit.png"))


def test_a_palette_png_with_transparency_is_rgb(tmp_path):
    indexed = Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4), mode="P")
    indexed.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    indexed.save(tmp_path / "p.png", transparency=bytes([0, 128] + [255] * 254))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would be a stray line on the predictor's stderr
        pixels = read_image(str(tmp_path / "p.png"))
    assert pixels.shape == (3, 4, 3)
    np.testing.assert_array_equal(pixels[0, 1], [1, 254, 0])


# ---- folders: symlinks and name order ---------------------------------------------------------------------


def test_folder_search_follows_no_folder_links_and_sorts_bytes(tmp_path):
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    for name in ["b.png", "sub/c.png", "é.png", "中.png", os.fsdecode(b"\xc3x.png")]:
        (root / name).write_bytes(b"")
    (root / "up").symlink_to("..")  # a link to .. would repeat the tree until ELOOP
    (root / "sub" / "again").symlink_to(root)
    (root / "loop1.png").symlink_to("loop2.png")
    (root / "loop2.png").symlink_to("loop1.png")
    (root / "dangling.png").symlink_to("nowhere.png")
    (root / "linked.png").symlink_to(root / "b.png")
    listed = [path for path, problem in list_images([str(root)])]
    names = ["b.png", "linked.png", "sub/c.png", os.fsdecode(b"\xc3x.png"), "é.png", "中.png"]
    assert listed == [f"{root}/{name}" for name in sorted(names, key=os.fsencode)]
    assert listed[3].endswith("\udcc3x.png")  # the byte 0xc3 sorts before é's 0xc3 0xa9 and 中's 0xe4


def test_running_out_of_memory_on_one_image_is_its_line(monkeypatch, tmp_path):
    """torch's CPU allocator failing while one image is resized: that image's problem line, not the run's end."""
    from fastgradmix.deploy import predictor as predictor_module
    from fastgradmix.deploy.model_folder import Preprocessing

    real = predictor_module.preprocess

    def preprocess(images, prep, device):
        if images[0].shape[0] > 100:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory")
        return real(images, prep, device)

    monkeypatch.setattr(predictor_module, "preprocess", preprocess)
    Image.fromarray(np.zeros((200, 200), dtype=np.uint8)).save(tmp_path / "big.png")
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(tmp_path / "small.png")
    predictor = predictor_module.Predictor.__new__(predictor_module.Predictor)
    predictor.model = type("Model", (), {"preprocessing": Preprocessing(16, 1, (0.5,), (0.5,))})()
    predictor.device = torch.device("cpu")
    with pytest.raises(ImageProblem, match="^out of memory while decoding or resizing the image$"):
        predictor.prepare(str(tmp_path / "big.png"))
    assert predictor.prepare(str(tmp_path / "small.png")).shape == (1, 1, 16, 16)
