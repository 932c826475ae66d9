"""The installed package holds every subpackage: pyproject.toml lists packages by hand,
so a new folder missing from the list would be absent from a non-editable install."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

REPO = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(init.parent.relative_to(REPO).parts) for init in (REPO / "fastgradmix").rglob("__init__.py")}
    assert on_disk == listed
    assert "fastgradmix.kernels" in listed
