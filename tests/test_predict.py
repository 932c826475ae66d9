"""fastgradmix.predict: decoding and preprocessing against PIL, input listing, and (slow) answers on real
digit images against the evaluation (its scores and results.json), batching, --json and bad input."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import torch
from deploy_helpers import (
    check_problem_lines,
    digit_images,
    eager_model,
    exported_model,
    parse_text_lines,
    predict_cli,
    trained_run,
    write_bad_inputs,
)
from PIL import Image

from fastgradmix.deploy.image_inputs import ImageProblem, list_images, preprocess, read_image, to_channels
from fastgradmix.deploy.model_folder import Preprocessing

GRAY_16PX = Preprocessing(16, 1, (0.5,), (0.5,))


def test_rgb_to_gray_is_pils_luma():
    rgb = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)  # rounding edges included
    expected = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(to_channels(rgb, 1)[0], expected)


def test_gray_is_replicated_for_rgb_models():
    gray = np.random.default_rng(1).integers(0, 256, (5, 7, 1), dtype=np.uint8)
    planar = to_channels(gray, 3)
    assert planar.shape == (3, 5, 7)
    for channel in planar:
        np.testing.assert_array_equal(channel, gray[..., 0])


@pytest.mark.parametrize("height,width", [(16, 16), (40, 40), (23, 57), (8, 8), (100, 30)])
def test_preprocessing_is_pils_bilinear_resize_and_normalisation(height, width):
    pixels = np.random.default_rng(height).integers(0, 256, (height, width, 1), dtype=np.uint8)
    ours = preprocess([pixels], GRAY_16PX, torch.device("cpu"))
    assert ours.shape == (1, 1, 16, 16) and ours.dtype == torch.float32
    # PIL's float bilinear resize (antialiased when shrinking), then (x - mean) / std
    scaled = Image.fromarray(pixels[..., 0].astype(np.float32) / 255, mode="F")
    expected = (np.asarray(scaled.resize((16, 16), Image.BILINEAR, reducing_gap=None)) - 0.5) / 0.5
    np.testing.assert_allclose(ours[0, 0].numpy(), expected, rtol=0, atol=1e-6)


def _save(image: Image.Image, path, **options):
    image.save(path, **options)
    return str(path)


def test_read_image_decodes_the_supported_png_and_jpeg_kinds(tmp_path):
    rng = np.random.default_rng(2)
    gray = rng.integers(0, 256, (9, 11), dtype=np.uint8)
    rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    np.testing.assert_array_equal(read_image(_save(Image.fromarray(gray), tmp_path / "g.png"))[..., 0], gray)
    np.testing.assert_array_equal(read_image(_save(Image.fromarray(rgb), tmp_path / "c.png")), rgb)
    # palette: indices looked up in the palette, no alpha
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    indexed = Image.fromarray(gray, mode="L").convert("P")
    indexed.putpalette(palette.flatten().tolist())
    np.testing.assert_array_equal(read_image(_save(indexed, tmp_path / "p.png", transparency=3)),
                                  palette[np.asarray(indexed)])
    # 1-bit: 0 and 255
    bits = gray > 128
    np.testing.assert_array_equal(read_image(_save(Image.fromarray(bits), tmp_path / "b.png"))[..., 0],
                                  np.where(bits, 255, 0))
    # 16-bit gray: the high byte
    deep = rng.integers(0, 65536, (9, 11)).astype(np.uint16)
    np.testing.assert_array_equal(read_image(_save(Image.fromarray(deep), tmp_path / "d.png"))[..., 0], deep >> 8)
    # JPEG: gray stays one channel, colour is RGB; a file is decoded by content, whatever its name
    assert read_image(_save(Image.fromarray(gray), tmp_path / "g.jpg", quality=95)).shape == (9, 11, 1)
    assert read_image(_save(Image.fromarray(rgb), tmp_path / "c.png.bin", format="JPEG")).shape == (9, 11, 3)


def test_read_image_rejects_alpha_cmyk_and_undecodable_files(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    cases = {
        _save(Image.fromarray(rgba), tmp_path / "rgba.png"): "image has 4 channels (RGBA)",
        _save(Image.fromarray(rgba[..., :2]), tmp_path / "la.png"): "image has 2 channels (LA)",
        _save(Image.fromarray(rgba).convert("CMYK"), tmp_path / "cmyk.jpg"): "image has 4 channels (CMYK)",
    }
    (tmp_path / "text.png").write_text("not an image")
    cases[str(tmp_path / "text.png")] = "cannot decode image (not a JPEG or PNG file)"
    whole = io.BytesIO()
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8) + 7).save(whole, format="PNG")
    (tmp_path / "cut.png").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    cases[str(tmp_path / "cut.png")] = "cannot decode image"
    (tmp_path / "x.gif").write_bytes(b"GIF89a" + bytes(20))
    cases[str(tmp_path / "x.gif")] = "not a JPEG or PNG file"
    for path, expected in cases.items():
        with pytest.raises(ImageProblem) as error:
            read_image(path)
        assert expected in str(error.value) and path not in str(error.value), str(error.value)


def test_inputs_are_listed_in_order_recursively_with_problems(tmp_path):
    for name in ["b.png", "a.JPG", "sub/c.jpeg", "sub/deeper/d.png", "notes.txt", "z.bmp"]:
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / name).write_bytes(b"")
    (tmp_path / "empty").mkdir()
    (tmp_path / "loose.weird").write_bytes(b"")
    listed = list_images([str(tmp_path / "in"), str(tmp_path / "empty"), str(tmp_path / "missing.png"),
                          str(tmp_path / "loose.weird")])
    root = str(tmp_path / "in")
    assert listed == [
        (f"{root}/a.JPG", None), (f"{root}/b.png", None), (f"{root}/sub/c.jpeg", None),
        (f"{root}/sub/deeper/d.png", None),
        (str(tmp_path / "empty"), "folder holds no .jpg, .jpeg or .png images"),
        (str(tmp_path / "missing.png"), "no such file or folder"),
        (str(tmp_path / "loose.weird"), None),  # named explicitly: decoded by content
    ]


# ---- the CLI on a trained and exported digits model ----------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return exported_model(tmp_path_factory)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return digit_images(tmp_path_factory)


@pytest.mark.slow
def test_predictions_reproduce_the_evaluation(run_dir, model_dir, images, capsys):
    """Every digits test image as a PNG: predict's scores give the AUROC and accuracy the run reported."""
    from sklearn.metrics import roc_auc_score

    from fastgradmix.data.protocols import build_protocol

    code, out, err = predict_cli(capsys, "--model", model_dir, images.folder / "png")
    assert code == 0 and err == ""
    lines = parse_text_lines(out)
    assert list(lines) == [str(path) for path in images.png]  # sorted folder order
    data = build_protocol("digits", 0, 16, "")
    labels = data.test_labels[images.rows].numpy()
    scores = np.array([score for _, score, _ in lines.values()])
    threshold = json.loads((model_dir / "model.json").read_text())["scoring"]["threshold"]
    assert all(t == pytest.approx(threshold, abs=1e-6) for _, _, t in lines.values())
    assert all((label == "unknown") == (score < threshold) for label, score, _ in lines.values())

    results = json.loads((run_dir / "results.json").read_text())
    assert roc_auc_score(labels >= 0, scores) == pytest.approx(results["auroc"], abs=1e-3)
    # closed-set accuracy needs the nearest class also for knowns called unknown: take it from --json
    code, out, _ = predict_cli(capsys, "--json", "--model", model_dir, images.folder / "png")
    nearest = [json.loads(line)["nearest_class"] for line in out.splitlines()]
    known = labels >= 0
    correct = [name == data.known_classes[label] for name, label in zip(nearest, labels, strict=True) if label >= 0]
    assert np.mean(correct) == pytest.approx(results["closed_acc"], abs=1.5 / known.sum())


@pytest.mark.slow
def test_scores_match_the_eager_model_on_png_and_resized_rgb_jpeg(run_dir, model_dir, images, capsys):
    """Reference: PIL decoding and luma, the evaluation's eval_view and bank, the eager model, Algorithm 1."""
    from fastgradmix.data.augment import AugmentSpec, eval_view
    from fastgradmix.data.protocols import build_protocol
    from fastgradmix.evaluation.features import extract_features
    from fastgradmix.evaluation.topk_similarity import class_topk_scores

    data = build_protocol("digits", 0, 16, "")
    spec = AugmentSpec(16, data.mean, data.std)
    model = eager_model(run_dir)
    bank = extract_features(model, data.train_images, spec, 256, torch.device("cpu"), progress=False)
    files = images.png[::6] + images.jpeg
    code, out, err = predict_cli(capsys, "--model", model_dir, "--batch-size", "16", *files)
    assert code == 0 and err == ""
    lines = parse_text_lines(out)
    pixels = [torch.from_numpy(np.asarray(Image.open(path).convert("L")).copy())[None] for path in files]
    with torch.no_grad():
        features = torch.cat([model(eval_view(image[None], spec)) for image in pixels])  # (N, 128)
    expected = class_topk_scores(features, bank, data.train_labels, data.num_known, k=10)
    best_score, best_class = expected.max(dim=1)
    for path, score, index in zip(files, best_score.tolist(), best_class.tolist(), strict=True):
        label, predicted_score, threshold = lines[str(path)]
        assert predicted_score == pytest.approx(score, abs=1e-4), path
        assert label == (data.known_classes[index] if score >= threshold else "unknown"), path


@pytest.mark.slow
def test_batch_size_and_json_do_not_change_the_answers(model_dir, images, capsys):
    files = images.png[:40:3] + images.jpeg[:5]
    _, one_at_a_time, _ = predict_cli(capsys, "--model", model_dir, "--batch-size", "1", *files)
    code, batched, _ = predict_cli(capsys, "--model", model_dir, "--batch-size", "7", *files)
    code_json, as_json, _ = predict_cli(capsys, "--model", model_dir, "--json", "--batch-size", "7", *files)
    assert code == code_json == 0
    single, many = parse_text_lines(one_at_a_time), parse_text_lines(batched)
    assert list(single) == list(many) == [str(path) for path in files]
    for path, (label, score, _) in many.items():
        assert single[path][0] == label and single[path][1] == pytest.approx(score, abs=1e-5)
    objects = [json.loads(line) for line in as_json.splitlines()]
    assert [obj["path"] for obj in objects] == list(many)
    for obj in objects:
        label, score, threshold = many[obj["path"]]
        assert obj["prediction"] == label and obj["known"] == (label != "unknown")
        assert obj["score"] == pytest.approx(score, abs=1e-6) and obj["threshold"] == pytest.approx(threshold)
        assert obj["known"] or obj["nearest_class"] != "unknown"


@pytest.mark.slow
def test_bad_images_are_one_line_each_and_the_rest_is_scored(model_dir, images, tmp_path, capsys):
    expected = write_bad_inputs(tmp_path / "mixed", images)
    folder = tmp_path / "mixed"
    code, out, err = predict_cli(capsys, "--model", model_dir, folder, folder / "empty", folder / "missing.jpg")
    assert code == 1
    assert list(parse_text_lines(out)) == [str(folder / "good.png")]
    assert len(err.strip().splitlines()) == len(expected)
    check_problem_lines(err, "fastgradmix.predict", expected)

    code, out, err = predict_cli(capsys, "--model", model_dir, folder / "text.png", folder / "empty")
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 3 and "no image could be scored (2 problems above)" in lines[-1]


@pytest.mark.slow
def test_bad_model_folders_are_one_line_and_exit_2(model_dir, images, tmp_path, capsys):
    broken_program = tmp_path / "broken_program"
    shutil.copytree(model_dir, broken_program)
    (broken_program / "model.cpu.pt2").write_bytes(b"PK\x03\x04 this is no package")
    truncated_bank = tmp_path / "truncated_bank"
    shutil.copytree(model_dir, truncated_bank)
    bank = truncated_bank / "bank.bin"
    bank.write_bytes(bank.read_bytes()[:-10])
    cases = {tmp_path / "missing": "does not exist", images.folder: "model.json is missing",
             broken_program: "cannot load the compiled program", truncated_bank: "bank.bin is corrupt"}
    for folder, problem in cases.items():
        code, out, err = predict_cli(capsys, "--model", folder, images.png[0])
        lines = err.strip().splitlines()
        assert code == 2 and out == "" and len(lines) == 1 and problem in lines[0], err
