"""CIFAR ResNeXt (Xie et al., 2017), as the paper's ResNeXt-29 8x64d / 16x64d.

Depth 9n + 2: a 3x3 stem, then three stages of n bottlenecks whose outputs are c, 2c, 4c
channels (c = 256 for ResNeXt-29). Stage i's grouped 3x3 convolution has C * d * 2^i
channels in C groups. The split network divides the cardinality C (the `width` argument);
the width per group d, the stem and the stage outputs stay as they are.
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
from dnc.models.registry import register_family, register_model


class ResNeXtBottleneck(nn.Module):
    """conv1x1-BN-ReLU-grouped conv3x3-BN-ReLU-conv1x1-BN, plus shortcut, then ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, cardinality: int, inner: int) -> None:
        super().__init__()
        self.skippable = in_ch == out_ch and stride == 1
        self.conv1 = conv1x1(in_ch, inner)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = conv3x3(inner, inner, stride, groups=cardinality)
        self.bn2 = nn.BatchNorm2d(inner)
        self.conv3 = conv1x1(inner, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module = (
            nn.Identity()
            if self.skippable
            else nn.Sequential(conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_ch, H, W) -> (B, out_ch, H / stride, W / stride)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNeXtCifar(Backbone):
    """ResNeXt of depth 9n + 2 with cardinality `width` and `group_width` channels per group."""

    def __init__(
        self,
        depth: int,
        group_width: int,
        *,
        num_classes: int,
        in_chans: int,
        image_size: int,
        width: float,
        dropout: float = 0.0,
        stem_channels: int = 64,
        stage_channels: int = 256,
    ) -> None:
        super().__init__(in_chans, image_size)
        check_input_dims(num_classes, in_chans, image_size)
        if (depth - 2) % 9 != 0 or depth < 11:
            raise ValueError(f"ResNeXt depth must be 9n + 2 with n >= 1, got {depth}")
        if width <= 0:
            raise ValueError(f"cardinality must be positive, got {width}")
        blocks_per_stage = (depth - 2) // 9
        cardinality = round_channels(width)

        self.stem = nn.Sequential(
            conv3x3(in_chans, stem_channels), nn.BatchNorm2d(stem_channels), nn.ReLU(inplace=True)
        )
        blocks: list[nn.Module] = []
        in_ch = stem_channels
        for stage in range(3):
            out_ch = stage_channels * 2**stage
            inner = cardinality * group_width * 2**stage  # per-group width doubles per stage
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(ResNeXtBottleneck(in_ch, out_ch, stride, cardinality, inner))
                in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.num_features = in_ch
        self.head = ClassifierHead(in_ch, num_classes, dropout)
        self.init_weights()


def split_cardinality(cardinality: float, split: int) -> float:
    """Member cardinality C / S: each group keeps its width, so members have C / S groups."""
    return float(round_channels(cardinality / split))


register_family(split_cardinality, dropout_rule="linear")  # head dropout p / S


@register_model(
    "resnext11_4x4d",
    4,
    5e-4,
    "tiny ResNeXt-11 4x4d (stem 64 = stage-1 output) for tests",
)
def resnext11_4x4d(**kwargs: Any) -> ResNeXtCifar:
    """ResNeXt-11 4x4d: one block per stage and stage outputs 64/128/256.

    The stem already has the stage-1 width, so the first block is skippable even though
    each stage has a single block.
    """
    return ResNeXtCifar(11, 4, stem_channels=64, stage_channels=64, **kwargs)


@register_model("resnext29_8x64d", 8, 5e-4, "ResNeXt-29 8x64d, paper 34.5 M")
def resnext29_8x64d(**kwargs: Any) -> ResNeXtCifar:
    """ResNeXt-29 with cardinality 8 and 64 channels per group."""
    return ResNeXtCifar(29, 64, **kwargs)


@register_model("resnext29_16x64d", 16, 5e-4, "ResNeXt-29 16x64d")
def resnext29_16x64d(**kwargs: Any) -> ResNeXtCifar:
    """ResNeXt-29 with cardinality 16 and 64 channels per group."""
    return ResNeXtCifar(29, 64, **kwargs)
