"""The out-sets of ``--tasks ood``: their names, a protocol's default pairing, and loading their images.

An out-set is a registered OOD protocol (its unknown test images, e.g. cifar10-vs-svhn), an ImageFolder
tree (``folder:PATH``) or ODIN-style synthetic noise (``noise:uniform``, ``noise:gaussian``). Every
out-set comes as uint8 images (N, C, H, W) at the in-distribution's stored size and channels.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fastgradmix.common.errors import UserError
from fastgradmix.data.openset import OpenSetData
from fastgradmix.data.protocols import PROTOCOLS, build_protocol
from fastgradmix.evaluation.osr_tasks import cap_rows
from fastgradmix.runs.config import Config

NOISE_SETS = ("noise:uniform", "noise:gaussian")


def default_out_sets(protocol: str) -> list[str]:
    """Registered OOD protocols sharing the run's in-distribution: for X-closed or X-vs-Y, every X-vs-*."""
    if protocol.endswith("-closed"):
        base = protocol[: -len("-closed")]
    elif "-vs-" in protocol:
        base = protocol.split("-vs-")[0]
    else:
        return []
    return sorted(name for name in PROTOCOLS if name.startswith(f"{base}-vs-"))


def check_out_set_names(specs: tuple[str, ...]) -> None:
    """Each name is an OOD protocol, folder:PATH or a noise set (whether the data is there is seen on loading)."""
    for spec in specs:
        if not (spec in PROTOCOLS or spec in NOISE_SETS or spec.startswith("folder:")):
            pairs = ", ".join(default_out_sets("cifar10-closed"))
            raise UserError(f"--ood-out {spec}: not an OOD protocol ({pairs}), folder:PATH or "
                            f"{' / '.join(NOISE_SETS)}")


def load_out_sets(specs: tuple[str, ...], cfg: Config, data: OpenSetData, count: int, limit: int, seed: int,
                  data_root: str, progress: bool, optional: bool) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The images of each out-set, at most ``limit`` drawn with ``seed`` (0 = all), and the notes of the
    out-sets left out: with ``optional`` (a default pairing) an out-set whose data is absent is a note
    ("ood NAME"), otherwise an error. ``count``: images of a noise set (the known test images')."""
    out_sets, notes = {}, {}
    for spec in specs:
        try:
            images = load_out_set(spec, cfg, data, count, seed, data_root, progress)
        except UserError as err:
            if not optional:
                raise
            notes[f"ood {spec}"] = str(err)
            continue
        out_sets[spec] = cap_rows(images, torch.zeros(images.shape[0], dtype=torch.int64), limit, seed)[0]
    return out_sets, notes


def load_out_set(spec: str, cfg: Config, data: OpenSetData, count: int, seed: int, data_root: str,
                 progress: bool) -> torch.Tensor:
    """The uint8 images (N, C, H, W) of one out-set, at the in-distribution's stored size and channels."""
    channels, height, width = data.test_images.shape[1:]
    if spec in NOISE_SETS:
        return noise_images(spec, (count, channels, height, width), seed)
    if spec.startswith("folder:"):
        return folder_images(spec, channels, max(height, width), progress)
    out = build_protocol(spec, 0, cfg.image_size, data_root or cfg.data_root, progress=progress)
    if out.known_classes != data.known_classes:
        raise UserError(f"--ood-out {spec}: its in-distribution classes differ from the run's ({cfg.protocol}); "
                        "pair out-sets with runs on the same known classes")
    return out.test_images[out.test_labels < 0]


def noise_images(spec: str, shape: tuple[int, int, int, int], seed: int) -> torch.Tensor:
    """ODIN's synthetic sets: i.i.d. U(0, 1), or N(0.5, 1) clipped to [0, 1], as uint8 images of ``shape``."""
    generator = torch.Generator().manual_seed(seed)
    values = (torch.rand(shape, generator=generator) if spec == "noise:uniform"
              else (0.5 + torch.randn(shape, generator=generator)).clamp(0, 1))
    return (values * 255).round().to(torch.uint8)


def folder_images(spec: str, channels: int, size: int, progress: bool) -> torch.Tensor:
    """Every image of an ImageFolder tree (``folder:PATH``), decoded at ``size`` with the run's channels."""
    from fastgradmix.data.readers.cache import DecodeOptions
    from fastgradmix.data.readers.folders import class_folders, read_class_folders

    folder = Path(spec[len("folder:"):]).expanduser()
    if not folder.is_dir():
        raise UserError(f"--ood-out {spec}: no such folder")
    names = class_folders(folder)
    if not names:
        raise UserError(f"--ood-out {spec}: expected an ImageFolder tree (PATH/<class>/<images>), found no "
                        "class folders")
    options = DecodeOptions(cache_dir=None, progress=progress, size=size)
    images = read_class_folders(folder, names, None, options, tag=f"ood-{folder.name}").images
    return _match_channels(images, channels)


def _match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """RGB out-set images for a grey run become luma (ITU-R 601); grey ones for an RGB run are repeated."""
    if images.shape[1] == channels:
        return images
    if channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images.float() * weights).sum(dim=1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    return images.expand(-1, channels, -1, -1).contiguous()
