"""Safe extraction of downloaded tar and zip archives: every member must land inside the destination.

Refused: absolute paths, '..' components, drive letters, and (in tars) links and device files. The
archive is checked in full before anything is written, so a bad archive leaves the destination as it was.
Tars are then extracted by ``tarfile``'s "data" filter where the Python has it (3.12, and 3.10.12 /
3.11.4 onwards), which refuses the same members again and drops setuid bits and group/other write
permission; on older Pythons the regular files are copied out one by one.
"""

from __future__ import annotations

import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

from fastgradmix.common.errors import UserError

HAS_DATA_FILTER = hasattr(tarfile, "data_filter")  # extractall(filter="data"); tests switch it off


def _check_member_name(archive: Path, name: str) -> None:
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in posix.parts \
            or ".." in windows.parts:
        raise UserError(f"refusing to extract {archive}: member {name!r} would be written outside the "
                        "destination folder")


def _check_inside(archive: Path, dest: Path, name: str) -> None:
    target = (dest / name).resolve()
    if target != dest and dest not in target.parents:
        raise UserError(f"refusing to extract {archive}: member {name!r} resolves outside {dest}")


def safe_extract(archive: Path, dest: Path) -> None:
    """Extracts a .tar[.gz|.bz2|.xz] or .zip archive into ``dest`` after checking every member."""
    dest.mkdir(parents=True, exist_ok=True)
    dest = dest.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as bundle:
            for info in bundle.infolist():
                _check_member_name(archive, info.filename)
                _check_inside(archive, dest, info.filename)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise UserError(f"refusing to extract {archive}: member {info.filename!r} is a symbolic link")
            bundle.extractall(dest)
        return
    try:
        bundle = tarfile.open(archive)
    except (tarfile.TarError, OSError) as err:
        raise UserError(f"cannot open {archive} as a tar or zip archive ({err})") from None
    with bundle:
        members = bundle.getmembers()
        for member in members:
            _check_member_name(archive, member.name)
            _check_inside(archive, dest, member.name)
            if not (member.isfile() or member.isdir()):
                raise UserError(f"refusing to extract {archive}: member {member.name!r} is a link or special file")
        if HAS_DATA_FILTER:
            bundle.extractall(dest, members=members, filter="data")
        else:
            _copy_out(bundle, members, dest)


def _copy_out(bundle: tarfile.TarFile, members: list[tarfile.TarInfo], dest: Path) -> None:
    """Regular files and folders only (checked), with the permissions ``open`` gives: no filter needed."""
    for member in members:
        target = dest / member.name
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        source = bundle.extractfile(member)
        with source, open(target, "wb") as handle:
            while chunk := source.read(1 << 20):
                handle.write(chunk)
