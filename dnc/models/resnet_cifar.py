"""CIFAR ResNets (He et al., 2016): basic-block ResNet-20/56/110 and the bottleneck nets.

basic: depth 6n + 2, a 3x3 stem then three stages of n basic blocks with w, 2w, 4w
channels (16/32/64): the literature's ResNet-20/56/110 (0.27 M / 0.85 M / 1.7 M). Shortcuts
that change shape are 1x1 projections (option B), not the paper's zero padding (option A),
so the packed (fused) execution can group them per member; that adds ~1% parameters.
bottleneck: depth 9n + 2, stages of n bottlenecks with base widths w, 2w, 4w and expansion
4 (outputs 4w, 8w, 16w), as the SplitNet paper's ResNet-110/164. The split network divides
the base width w (16 -> 12 / 8 / 6 / 4 for S = 2 / 4 / 8 / 16); the stem follows w.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dnc.models.layers import (
    Backbone,
    ClassifierHead,
    check_input_dims,
    conv1x1,
    conv3x3,
    round_channels,
)
from dnc.models.registry import register_alias, register_family, register_model

EXPANSION = 4


class Bottleneck(nn.Module):
    """conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1-BN, plus shortcut, then ReLU."""

    expansion = EXPANSION

    def __init__(self, in_ch: int, planes: int, stride: int) -> None:
        super().__init__()
        out_ch = planes * EXPANSION
        self.skippable = in_ch == out_ch and stride == 1
        self.conv1 = conv1x1(in_ch, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module = (
            nn.Identity()
            if self.skippable
            else nn.Sequential(conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_ch, H, W) -> (B, 4 * planes, H / stride, W / stride)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class BasicBlock(nn.Module):
    """conv3x3(stride)-BN-ReLU-conv3x3-BN, plus shortcut, then ReLU."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int) -> None:
        super().__init__()
        self.skippable = in_ch == planes and stride == 1
        self.conv1 = conv3x3(in_ch, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = (
            nn.Identity()
            if self.skippable
            else nn.Sequential(conv1x1(in_ch, planes, stride), nn.BatchNorm2d(planes))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_ch, H, W) -> (B, planes, H / stride, W / stride)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


BLOCKS: dict[str, tuple[type[nn.Module], int]] = {
    "basic": (BasicBlock, 6),  # block type, layers per block per stage (depth = k n + 2)
    "bottleneck": (Bottleneck, 9),
}


class ResNetCifar(Backbone):
    """CIFAR ResNet of `block` type ("basic": depth 6n + 2, "bottleneck": 9n + 2)."""

    def __init__(
        self,
        depth: int,
        block: str = "bottleneck",
        *,
        num_classes: int,
        in_chans: int,
        image_size: int,
        width: float,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(in_chans, image_size)
        check_input_dims(num_classes, in_chans, image_size)
        kind, per = BLOCKS[block]
        if (depth - 2) % per != 0 or depth < per + 2:
            raise ValueError(f"{block} ResNet depth must be {per}n + 2 with n >= 1, got {depth}")
        if width <= 0:
            raise ValueError(f"base width must be positive, got {width}")
        blocks_per_stage = (depth - 2) // per
        base = round_channels(width)

        self.stem = nn.Sequential(
            conv3x3(in_chans, base), nn.BatchNorm2d(base), nn.ReLU(inplace=True)
        )
        blocks: list[nn.Module] = []
        in_ch = base
        for stage, planes in enumerate((base, 2 * base, 4 * base)):
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(kind(in_ch, planes, stride))
                in_ch = planes * kind.expansion
        self.blocks = nn.Sequential(*blocks)
        self.num_features = in_ch
        self.head = ClassifierHead(in_ch, num_classes, dropout)
        self.init_weights()


def split_base_width(width: float, split: int) -> float:
    """Member base width: the nearest even number to w / sqrt(S).

    It reproduces the paper's 16 -> 12 / 8 / 6 / 4 for S = 2 / 4 / 8 / 16 (plain rounding
    gives 11 at S = 2; ceil also fits but biases up).
    """
    return float(max(1, 2 * math.floor(width / (2 * math.sqrt(split)) + 0.5)))


register_family(split_base_width, dropout_rule="linear")  # head dropout p / S


@register_model("basic_resnet20", 16, 1e-4, "ResNet-20 (basic blocks), He et al. 0.27 M")
def basic_resnet20(**kwargs: Any) -> ResNetCifar:
    """ResNet-20 of He et al.: three basic blocks per stage."""
    return ResNetCifar(20, "basic", **kwargs)


@register_model("basic_resnet56", 16, 1e-4, "ResNet-56 (basic blocks), He et al. 0.85 M")
def basic_resnet56(**kwargs: Any) -> ResNetCifar:
    """ResNet-56 of He et al.: nine basic blocks per stage."""
    return ResNetCifar(56, "basic", **kwargs)


@register_model("basic_resnet110", 16, 1e-4, "ResNet-110 (basic blocks), He et al. 1.7 M")
def basic_resnet110(**kwargs: Any) -> ResNetCifar:
    """ResNet-110 of He et al.: 18 basic blocks per stage."""
    return ResNetCifar(110, "basic", **kwargs)


@register_model(
    "bottleneck_resnet20", 16, 1e-4, "tiny bottleneck ResNet-20 (2 per stage) for tests"
)
def bottleneck_resnet20(**kwargs: Any) -> ResNetCifar:
    """Bottleneck ResNet-20: two bottlenecks per stage."""
    return ResNetCifar(20, "bottleneck", **kwargs)


@register_model("bottleneck_resnet110", 16, 1e-4, "bottleneck ResNet-110, paper 1.17 M")
def bottleneck_resnet110(**kwargs: Any) -> ResNetCifar:
    """Bottleneck ResNet-110: 12 bottlenecks per stage (the SplitNet paper's ResNet-110)."""
    return ResNetCifar(110, "bottleneck", **kwargs)


@register_model("bottleneck_resnet164", 16, 1e-4, "bottleneck ResNet-164, paper 1.73 M")
def bottleneck_resnet164(**kwargs: Any) -> ResNetCifar:
    """Bottleneck ResNet-164: 18 bottlenecks per stage."""
    return ResNetCifar(164, "bottleneck", **kwargs)


# The old names said nothing of the bottleneck (the literature's ResNet-20/110 are the basic
# nets above); they keep working, with a DeprecationWarning, until configs have moved.
for _depth in (20, 110, 164):
    register_alias(f"resnet{_depth}", f"bottleneck_resnet{_depth}")
