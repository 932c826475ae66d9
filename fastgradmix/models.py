"""ResNet encoders with a CIFAR stem, the projection head, and CAM layers addressed by name.

CAM layer names follow the ResNet paper's stage numbering, 1-based: ``conv{stage}_{block}`` with
conv2_x = layer1 ... conv5_x = layer4, so for ResNet-18 ``conv5_2`` is the output of ``layer4[1]``.
The model knows nothing of augmentation; gradmix/capture.py hooks the modules that ``cam_module`` returns.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet

# block type and blocks per stage (layer1..layer4) of each depth
ARCHITECTURES = {
    "resnet18": (resnet.BasicBlock, (2, 2, 2, 2)),
    "resnet34": (resnet.BasicBlock, (3, 4, 6, 3)),
    "resnet50": (resnet.Bottleneck, (3, 4, 6, 3)),
}

_CAM_NAME = re.compile(r"^conv([2-5])_([1-9][0-9]*)$")


class ResNetEncoder(nn.Module):
    """torchvision-style ResNet trunk without the classifier; returns pooled features (N, feature_dim).

    ``stem="cifar"`` (the default) uses a 3x3 stride-1 first convolution and no max-pool, as small
    (32/64 px) inputs need; ``stem="imagenet"`` keeps the 7x7 stride-2 convolution and the max-pool.
    ``width`` scales every stage (64 is the standard ResNet); smaller widths make CPU runs quick.
    """

    def __init__(self, arch: str = "resnet18", in_channels: int = 3, stem: str = "cifar", width: int = 64):
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"unknown stem {stem!r}; choose 'cifar' or 'imagenet'")
        block, depths = ARCHITECTURES[arch]
        self.arch = arch
        self.depths = depths
        if stem == "cifar":
            self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self._inplanes = width
        self.layer1 = self._make_stage(block, width, depths[0], stride=1)
        self.layer2 = self._make_stage(block, width * 2, depths[1], stride=2)
        self.layer3 = self._make_stage(block, width * 4, depths[2], stride=2)
        self.layer4 = self._make_stage(block, width * 8, depths[3], stride=2)
        self.feature_dim = width * 8 * block.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_stage(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self._inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self._inplanes, planes, stride, downsample)]
        self._inplanes = planes * block.expansion
        layers += [block(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, H, W) -> (N, feature_dim)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def cam_module(self, name: str) -> nn.Module:
        """The block whose output is CAM layer ``name`` (e.g. ``conv5_2`` -> ``layer4[1]``)."""
        match = _CAM_NAME.match(name)
        if match is None:
            raise ValueError(f"bad CAM layer name {name!r}: expected conv<stage>_<block>, e.g. conv5_2")
        stage, index = int(match.group(1)), int(match.group(2))
        blocks = getattr(self, f"layer{stage - 1}")
        if index > len(blocks):
            raise ValueError(
                f"CAM layer {name!r} does not exist in {self.arch}: stage conv{stage}_x has {len(blocks)} blocks"
            )
        return blocks[index - 1]

    def cam_layer_names(self) -> list[str]:
        return [f"conv{s + 2}_{b + 1}" for s, depth in enumerate(self.depths) for b in range(depth)]


class ProjectionHead(nn.Module):
    """MLP d -> d -> out_dim; the contrastive features are the L2-normalised outputs."""

    def __init__(self, in_dim: int, out_dim: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, out_dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (N, d) -> (N, out_dim)
        return self.net(h)


class ContrastiveModel(nn.Module):
    """Encoder + projection head; ``forward`` returns L2-normalised features (N, out_dim)."""

    def __init__(
        self,
        arch: str = "resnet18",
        in_channels: int = 3,
        stem: str = "cifar",
        width: int = 64,
        feature_dim: int = 128,
    ):
        super().__init__()
        self.encoder = ResNetEncoder(arch, in_channels=in_channels, stem=stem, width=width)
        self.head = ProjectionHead(self.encoder.feature_dim, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.encoder(x)).float(), dim=1)

    def cam_module(self, name: str) -> nn.Module:
        return self.encoder.cam_module(name)

    def embedder(self) -> nn.Module:
        """The module whose output Algorithm 1 scores: the model itself (L2-normalised head outputs)."""
        return self


class NormalizedEncoder(nn.Module):
    """The L2-normalised pooled features of an encoder (N, d): what Algorithm 1 scores for a classifier model.

    It holds the encoder it is given (the same parameters, not a copy), so it is made on demand and never
    stored inside the model (its state_dict would list the encoder twice).
    """

    def __init__(self, encoder: ResNetEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, d)
        return F.normalize(self.encoder(x).float(), dim=1)

    def cam_module(self, name: str) -> nn.Module:
        return self.encoder.cam_module(name)


class ClassifierModel(nn.Module):
    """Encoder + a linear classifier on its pooled features (``--method ce``); ``forward`` returns the logits
    (N, num_classes) in fp32, and ``embedder()`` the L2-normalised pooled features for Algorithm 1."""

    def __init__(self, arch: str = "resnet18", in_channels: int = 3, stem: str = "cifar", width: int = 64,
                 num_classes: int = 10):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
        self.encoder = ResNetEncoder(arch, in_channels=in_channels, stem=stem, width=width)
        self.classifier = nn.Linear(self.encoder.feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> logits (N, num_classes)
        return self.classifier(self.encoder(x)).float()

    def cam_module(self, name: str) -> nn.Module:
        return self.encoder.cam_module(name)

    def embedder(self) -> nn.Module:
        return NormalizedEncoder(self.encoder)


def build_model(arch: str, in_channels: int, stem: str = "cifar", width: int = 64, feature_dim: int = 128,
                channels_last: bool = False, num_classes: int = 0) -> ContrastiveModel | ClassifierModel:
    """A contrastive model (encoder + projection head), or with ``num_classes`` > 0 a classifier model."""
    if num_classes:
        model = ClassifierModel(arch, in_channels=in_channels, stem=stem, width=width, num_classes=num_classes)
    else:
        model = ContrastiveModel(arch, in_channels=in_channels, stem=stem, width=width, feature_dim=feature_dim)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
