"""CIFAR ResNet with bottleneck blocks (He et al., 2016), as the paper's ResNet-110/164.

Depth 9n + 2: a 3x3 stem, then three stages of n bottlenecks with base widths w, 2w, 4w
and expansion 4 (outputs 4w, 8w, 16w). The split network divides the base width w
(16 -> 12 / 8 / 6 / 4 for S = 2 / 4 / 8 / 16); the stem follows w, as in a plain thin ResNet.
"""

from __future__ import annotations

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
from dnc.models.registry import register_model

EXPANSION = 4


class Bottleneck(nn.Module):
    """conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1-BN, plus shortcut, then ReLU."""

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


class ResNetCifar(Backbone):
    """Bottleneck CIFAR ResNet of depth 9n + 2 with base width `width`."""

    def __init__(
        self,
        depth: int,
        *,
        num_classes: int,
        in_chans: int,
        image_size: int,
        width: float,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(in_chans, image_size)
        check_input_dims(num_classes, in_chans, image_size)
        if (depth - 2) % 9 != 0 or depth < 11:
            raise ValueError(f"bottleneck ResNet depth must be 9n + 2 with n >= 1, got {depth}")
        if width <= 0:
            raise ValueError(f"base width must be positive, got {width}")
        blocks_per_stage = (depth - 2) // 9
        base = round_channels(width)

        self.stem = nn.Sequential(
            conv3x3(in_chans, base), nn.BatchNorm2d(base), nn.ReLU(inplace=True)
        )
        blocks: list[nn.Module] = []
        in_ch = base
        for stage, planes in enumerate((base, 2 * base, 4 * base)):
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(Bottleneck(in_ch, planes, stride))
                in_ch = planes * EXPANSION
        self.blocks = nn.Sequential(*blocks)
        self.num_features = in_ch
        self.head = ClassifierHead(in_ch, num_classes, dropout)
        self.init_weights()


@register_model("resnet20", "resnet_cifar", 16, 1e-4, "tiny bottleneck ResNet-20 for tests")
def resnet20(**kwargs: Any) -> ResNetCifar:
    """Bottleneck ResNet-20: two blocks per stage."""
    return ResNetCifar(20, **kwargs)


@register_model("resnet110", "resnet_cifar", 16, 1e-4, "bottleneck ResNet-110, paper 1.17 M")
def resnet110(**kwargs: Any) -> ResNetCifar:
    """Bottleneck ResNet-110: 12 blocks per stage."""
    return ResNetCifar(110, **kwargs)


@register_model("resnet164", "resnet_cifar", 16, 1e-4, "bottleneck ResNet-164, paper 1.73 M")
def resnet164(**kwargs: Any) -> ResNetCifar:
    """Bottleneck ResNet-164: 18 blocks per stage."""
    return ResNetCifar(164, **kwargs)
