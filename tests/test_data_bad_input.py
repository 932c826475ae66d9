"""Bad data input: one clear line (exit code 2 from the CLI), before any training and with nothing written."""

from __future__ import annotations

import io
import pickle
import shutil
import subprocess
import sys
import tarfile
import zipfile

import numpy as np
import pytest
from dataset_writers import CIFAR10_NAMES, array_split, write_cifar10_pickles, write_class_folders
from image_headers import png_header

from fastgradmix.common.errors import UserError
from fastgradmix.data.fetching import archives
from fastgradmix.data.fetching.archives import safe_extract
from fastgradmix.data.protocols import build_protocol
from fastgradmix.train import main

TINY = ["--width", "8", "--batch-size", "8", "--epochs", "1", "--no-progress", "--eval-batch-size", "64"]


def _cli_error(capsys, args) -> str:
    """Runs the training CLI in-process; returns its one stderr line after checking exit code 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("protocol,dataset,layout,hints", [
    ("mnist", "MNIST", "mnist/raw/", ("--download", "unpack.sh")),
    ("svhn", "SVHN", "svhn/{train,test}_32x32.mat", ("--download",)),
    ("cifar10", "CIFAR-10", "cifar-10-batches-py/", ("--download", "unpack.sh")),
    ("cifar100-closed", "CIFAR-100", "cifar-100-python/", ("--download",)),
    ("tinyimagenet", "Tiny ImageNet", "tiny-imagenet-200/", ("--download", "unpack.sh")),
    ("imagefolder", "image folder", "{train,test}/<class name>/", ("--data-root",)),
])
def test_missing_root_names_protocol_path_layout_and_hint(tmp_path, capsys, protocol, dataset, layout, hints):
    root, out = tmp_path / "nothing-here", tmp_path / "run"
    extra = ["--known-classes", "a,b"] if protocol == "imagefolder" else []
    line = _cli_error(capsys, TINY + ["--protocol", protocol, "--data-root", str(root), "--out", str(out), *extra])
    assert f"protocol {protocol}" in line and f"{dataset} not found" in line
    assert str(root) in line and layout in line
    for hint in hints:
        assert hint in line
    assert not out.exists() and not root.exists()


def test_missing_root_exit_code_from_a_real_process(tmp_path):
    result = subprocess.run([sys.executable, "-m", "fastgradmix.train", "--protocol", "mnist", "--data-root",
                             str(tmp_path / "none"), "--out", str(tmp_path / "run")], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "MNIST not found" in result.stderr


def test_missing_file_in_a_present_layout(synthetic_data, tmp_path):
    root, _ = synthetic_data
    shutil.copytree(root / "mnist", tmp_path / "mnist")
    (tmp_path / "mnist" / "raw" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match=r"protocol mnist: MNIST not found \(t10k-labels-idx1-ubyte\[.gz\] is missing"):
        build_protocol("mnist", 0, 32, tmp_path, progress=False)
    shutil.copytree(root / "cifar-10-batches-py", tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(UserError, match="data_batch_3 is missing"):
        build_protocol("cifar10", 0, 32, tmp_path, progress=False)


def test_cifar_plus_names_the_missing_cifar100(synthetic_data, tmp_path):
    root, _ = synthetic_data
    shutil.copytree(root / "cifar-10-batches-py", tmp_path / "cifar-10-batches-py")
    with pytest.raises(UserError, match=r"protocol cifar\+10: CIFAR-100 not found: looked in .*cifar-100-python"):
        build_protocol("cifar+10", 0, 32, tmp_path, progress=False)


def _jpeg_cifar(root, per_class=2):
    for part in ("train", "test"):
        write_class_folders(root / "cifar10-jpeg" / part, CIFAR10_NAMES, per_class)


@pytest.mark.parametrize("damage", [b"this is not a jpeg", "truncate"])
def test_corrupt_image_is_named_or_skipped_and_counted(tmp_path, capsys, damage):
    _jpeg_cifar(tmp_path)
    bad = tmp_path / "cifar10-jpeg" / "train" / "cat" / "0001.jpg"
    bad.write_bytes(damage if isinstance(damage, bytes) else bad.read_bytes()[:40])
    with pytest.raises(UserError, match=f"cannot read image {bad}.*--skip-bad-images"):
        build_protocol("cifar10-closed", 0, 32, tmp_path, progress=False)
    data = build_protocol("cifar10-closed", 0, 32, tmp_path, progress=False, skip_bad_images=True)
    assert data.train_images.shape[0] == 19 and data.skipped_images == 1
    assert str(bad) not in data.train_files and "1 unreadable images skipped" in data.describe()
    # the skipped image is remembered by the cache: without the flag the next run still stops on it
    with pytest.raises(UserError, match=f"cannot read image {bad}"):
        build_protocol("cifar10-closed", 0, 32, tmp_path, progress=False)


def test_corrupt_image_through_the_cli(tmp_path, capsys):
    _jpeg_cifar(tmp_path, per_class=2)
    bad = tmp_path / "cifar10-jpeg" / "test" / "ship" / "0000.jpg"
    bad.write_bytes(b"\xff\xd8 garbage")
    out = tmp_path / "run"
    line = _cli_error(capsys, TINY + ["--protocol", "cifar10-closed", "--data-root", str(tmp_path), "--out",
                                      str(out)])
    assert str(bad) in line and not out.exists()


@pytest.mark.parametrize("protocol,split,expected", [
    ("mnist", 5, "split 5 is out of range for mnist: choose 0..4"),
    ("tinyimagenet", 9, "choose 0..4"),
    ("cifar10-closed", 1, "split 1 is out of range for cifar10-closed: choose 0"),
    ("cifar10-vs-svhn", 2, "choose 0"),
])
def test_split_out_of_range_before_reading_anything(tmp_path, capsys, protocol, split, expected):
    # the data root does not exist: the split is checked first
    line = _cli_error(capsys, TINY + ["--protocol", protocol, "--split", str(split), "--data-root",
                                      str(tmp_path / "none"), "--out", str(tmp_path / "run")])
    assert expected in line


def test_split_must_be_an_index_or_all(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--split", "first"])
    assert exit_info.value.code == 2 and "invalid split 'first'" in capsys.readouterr().err


def _folders(root, classes, per_class=2):
    for part in ("train", "test"):
        write_class_folders(root / part, classes, per_class, ext=".png")


@pytest.mark.parametrize("known,unknown,expected", [
    ("a,b", "b,c", "the known and unknown class lists overlap (b)"),
    ("a,a", None, "the known class list repeats a"),
    ("a,zebra", None, "no class folder zebra"),
    ("", None, "needs --known-classes"),
])
def test_imagefolder_class_lists(tmp_path, known, unknown, expected):
    _folders(tmp_path, ["a", "b", "c"])
    with pytest.raises(UserError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        build_protocol("imagefolder", 0, 16, tmp_path, known_classes=known or None, unknown_classes=unknown,
                       progress=False)


def test_symlink_loops_and_oversized_images_in_a_tree_are_one_line_or_skipped(tmp_path, capsys):
    """A looping link and a PNG claiming more pixels than PIL's limit: one line naming the first, or with
    --skip-bad-images both left out and counted (issue 17: a traceback either way before)."""
    _folders(tmp_path, ["a", "b"])
    loop = tmp_path / "train" / "a" / "0000_loop.png"
    loop.symlink_to("0000_loop.png")
    (tmp_path / "train" / "b" / "bomb.png").write_bytes(png_header(40000, 40000))
    (tmp_path / "train" / "b" / "up").symlink_to("..")  # a folder link inside a class folder is not searched
    line = _cli_error(capsys, ["--protocol", "imagefolder", "--data-root", str(tmp_path), "--known-classes", "a,b",
                               "--out", str(tmp_path / "run"), *TINY])
    assert f"cannot read image {loop}" in line and "Too many levels of symbolic links" in line, line
    data = build_protocol("imagefolder", 0, 16, tmp_path, known_classes="a,b", progress=False, skip_bad_images=True)
    assert data.skipped_images == 2 and data.train_images.shape[0] == 4
    (tmp_path / "train" / "a" / "0000_loop.png").unlink()
    with pytest.raises(UserError, match=r"bomb\.png \(ImageTooLarge: image has 1600000000 pixels, more than the "
                                        r"limit of 89478485"):
        build_protocol("imagefolder", 0, 16, tmp_path, known_classes="a,b", progress=False, cache=False)


def test_empty_class_folder(tmp_path):
    _folders(tmp_path, ["a", "b", "c"])
    for image in (tmp_path / "train" / "b").iterdir():
        image.unlink()
    with pytest.raises(UserError, match=r"class folder .*train/b holds no images.*class 'b' is empty"):
        build_protocol("imagefolder", 0, 16, tmp_path, known_classes="a,b", progress=False)
    _jpeg_cifar(tmp_path / "cifar")
    shutil.rmtree(tmp_path / "cifar" / "cifar10-jpeg" / "test" / "frog")
    (tmp_path / "cifar" / "cifar10-jpeg" / "test" / "frog").mkdir()
    with pytest.raises(UserError, match="class 'frog' is empty"):
        build_protocol("cifar10-closed", 0, 32, tmp_path / "cifar", progress=False)


def test_class_without_images_in_array_data(tmp_path):
    truth = array_split(10, 5, 2, 3, 32, seed=7)
    images, labels = truth["train"]
    keep = labels != 3  # CIFAR-10 training pickles without a single cat
    truth["train"] = (images[keep], labels[keep])
    write_cifar10_pickles(tmp_path / "cifar-10-batches-py", truth)
    with pytest.raises(UserError, match="the training set has no images of class cat: the class is empty"):
        build_protocol("cifar10-closed", 0, 32, tmp_path, progress=False)


def test_options_that_do_not_fit_the_protocol(tmp_path):
    with pytest.raises(UserError, match="apply to --protocol imagefolder only"):
        build_protocol("mnist", 0, 32, tmp_path, known_classes="1,2")
    with pytest.raises(UserError, match="no official download location"):
        build_protocol("imagefolder", 0, 32, tmp_path, download=True, known_classes="a")


def test_negative_train_subset(capsys):
    assert "--train-subset must be >= 0" in _cli_error(capsys, ["--train-subset", "-5"])


# ---- malformed files ----

def test_corrupt_array_files(synthetic_data, tmp_path):
    root, _ = synthetic_data
    shutil.copytree(root / "mnist", tmp_path / "mnist")
    (tmp_path / "mnist" / "raw" / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match="train-images-idx3-ubyte.gz"):
        build_protocol("mnist", 0, 32, tmp_path, progress=False)
    (tmp_path / "svhn").mkdir()
    (tmp_path / "svhn" / "train_32x32.mat").write_bytes(b"MATLAB? no")
    shutil.copy(root / "svhn" / "test_32x32.mat", tmp_path / "svhn")
    with pytest.raises(UserError, match=r"cannot read .*train_32x32.mat"):
        build_protocol("svhn", 0, 32, tmp_path, progress=False)
    shutil.copytree(root / "cifar-10-batches-py", tmp_path / "cifar-10-batches-py")
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(batch.read_bytes()[:100])
    with pytest.raises(UserError, match="test_batch"):
        build_protocol("cifar10", 0, 32, tmp_path, progress=False)


class _RunsCode:
    """Pickles as a call to os.system: what a tampered dataset file would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10_pickles(folder, array_split(10, 5, 1, 3, 32, seed=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": _RunsCode(marker)}, protocol=2))
    refused = r"refusing to load .*batches.meta: global '(posix|os|nt)\.system' is not allowed"
    with pytest.raises(UserError, match=refused):
        build_protocol("cifar10", 0, 32, tmp_path, progress=False)
    assert not marker.exists()
    # the same payload through plain pickle would have run: the test's payload is real
    pickle.loads(pickle.dumps(_RunsCode(marker)))
    assert marker.exists()


def test_restricted_unpickler_refuses_other_numpy_globals(tmp_path):
    from fastgradmix.data.readers.safe_pickle import load_data_pickle

    path = tmp_path / "meta"
    path.write_bytes(pickle.dumps({b"x": np.float64(1.5)}, protocol=2))  # needs numpy scalar globals
    with pytest.raises(UserError, match="is not allowed"):
        load_data_pickle(path)


# ---- archives ----

def _tar(path, members):
    with tarfile.open(path, "w:gz") as bundle:
        for name, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                bundle.addfile(info)
            else:
                info.size = 5
                bundle.addfile(info, io.BytesIO(b"hello"))


@pytest.mark.parametrize("members", [
    [("ok/a.txt", "file"), ("../evil.txt", "file")],
    [("ok/a.txt", "file"), ("/tmp/absolute-evil.txt", "file")],
    [("ok/../../evil.txt", "file")],
    [("ok/link", "symlink")],
])
def test_safe_extract_refuses_a_malicious_tar(tmp_path, monkeypatch, members):
    archive, dest = tmp_path / "bad.tar.gz", tmp_path / "dest"
    _tar(archive, members)
    for data_filter in {False, archives.HAS_DATA_FILTER}:  # the pre-check refuses before either extraction
        monkeypatch.setattr(archives, "HAS_DATA_FILTER", data_filter)
        with pytest.raises(UserError, match="refusing to extract"):
            safe_extract(archive, dest)
        assert not (tmp_path / "evil.txt").exists() and not any(dest.rglob("*"))  # nothing written, not even ok/a


@pytest.mark.parametrize("name", ["../evil.txt", "/abs/evil.txt", "a/../../evil.txt", "C:\\evil.txt"])
def test_safe_extract_refuses_a_malicious_zip(tmp_path, name):
    archive, dest = tmp_path / "bad.zip", tmp_path / "dest"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("fine.txt", "fine")
        bundle.writestr(name, "evil")
    with pytest.raises(UserError, match="refusing to extract"):
        safe_extract(archive, dest)
    assert not (tmp_path / "evil.txt").exists() and not any(dest.rglob("*"))


@pytest.mark.parametrize("data_filter", [True, False], ids=["tarfile-data-filter", "copy-out"])
def test_safe_extract_extracts_a_good_archive(tmp_path, monkeypatch, data_filter):
    if data_filter and not archives.HAS_DATA_FILTER:
        pytest.skip("this Python's tarfile has no data filter")
    monkeypatch.setattr(archives, "HAS_DATA_FILTER", data_filter)
    _tar(tmp_path / "good.tar.gz", [("top/a.txt", "file"), ("top/sub/b.txt", "file")])
    safe_extract(tmp_path / "good.tar.gz", tmp_path / "dest")
    assert (tmp_path / "dest" / "top" / "sub" / "b.txt").read_bytes() == b"hello"
    with zipfile.ZipFile(tmp_path / "good.zip", "w") as bundle:
        bundle.writestr("z/c.txt", "zip")
    safe_extract(tmp_path / "good.zip", tmp_path / "dest")
    assert (tmp_path / "dest" / "z" / "c.txt").read_text() == "zip"


@pytest.mark.parametrize("data_filter", [True, False], ids=["tarfile-data-filter", "copy-out"])
def test_safe_extract_drops_setuid_and_group_other_write(tmp_path, monkeypatch, data_filter):
    if data_filter and not archives.HAS_DATA_FILTER:
        pytest.skip("this Python's tarfile has no data filter")
    monkeypatch.setattr(archives, "HAS_DATA_FILTER", data_filter)
    with tarfile.open(tmp_path / "modes.tar", "w") as bundle:
        info = tarfile.TarInfo("run.sh")
        info.size, info.mode = 5, 0o4777
        bundle.addfile(info, io.BytesIO(b"hello"))
    safe_extract(tmp_path / "modes.tar", tmp_path / "dest")
    mode = (tmp_path / "dest" / "run.sh").stat().st_mode
    assert mode & 0o4000 == 0 and mode & 0o022 == 0 and (tmp_path / "dest" / "run.sh").read_bytes() == b"hello"
