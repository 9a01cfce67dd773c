"""Pre-activation Wide ResNet for CIFAR (Zagoruyko & Komodakis, 2016).

WRN-d-k: a 16-channel stem, then three groups of n = (d - 4) / 6 basic blocks with
16k, 32k, 64k channels. The split network divides k; the stem stays at 16 channels.
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
from dnc.models.registry import register_family, register_model

STEM_CHANNELS = 16  # fixed under division (paper rule)


class PreActBasicBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus shortcut (1x1 projection when shapes change)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.skippable = in_ch == out_ch and stride == 1
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = conv3x3(in_ch, out_ch, stride)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = conv3x3(out_ch, out_ch)
        self.shortcut = None if self.skippable else conv1x1(in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_ch, H, W) -> (B, out_ch, H / stride, W / stride)."""
        out = F.relu(self.bn1(x))
        # The projection reads the pre-activated input, as in the original WRN.
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class WideResNet(Backbone):
    """WRN-depth-k with k = `width` (may be fractional) and head dropout `dropout`.

    The reference trains WRNs without dropout inside blocks, so there is none here.
    """

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
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"WRN depth must be 6n + 4 with n >= 1, got {depth}")
        if width <= 0:
            raise ValueError(f"widen factor must be positive, got {width}")
        blocks_per_group = (depth - 4) // 6
        widths = [round_channels(STEM_CHANNELS * m * width) for m in (1, 2, 4)]

        self.stem = conv3x3(in_chans, STEM_CHANNELS)
        blocks: list[nn.Module] = []
        in_ch = STEM_CHANNELS
        for group, out_ch in enumerate(widths):
            for index in range(blocks_per_group):
                stride = 2 if group > 0 and index == 0 else 1
                blocks.append(PreActBasicBlock(in_ch, out_ch, stride))
                in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.num_features = in_ch
        self.head = ClassifierHead(in_ch, num_classes, dropout, pre_norm=True)
        self.init_weights()


def split_widen_factor(k: float, split: int) -> float:
    """Member widen factor: the reference rule int(max(k / sqrt(S) + 0.4, 1)).

    WRN-28-10 -> 10 / 7 / 5 for S = 1 / 2 / 4.
    """
    return float(int(max(k / math.sqrt(split) + 0.4, 1.0)))


register_family(split_widen_factor, dropout_rule="linear")  # head dropout p / S


@register_model("wide_resnet10_2", 2, 5e-4, "tiny WRN-10-2 for tests; no skippable block")
def wide_resnet10_2(**kwargs: Any) -> WideResNet:
    """WRN-10-2: one block per group, so every block changes shape."""
    return WideResNet(10, **kwargs)


@register_model("wide_resnet16_2", 2, 5e-4, "tiny WRN-16-2 for tests")
def wide_resnet16_2(**kwargs: Any) -> WideResNet:
    """WRN-16-2: two blocks per group, the smallest WRN with skippable blocks."""
    return WideResNet(16, **kwargs)


@register_model("wide_resnet16_8", 8, 1e-4, "WRN-16-8, paper 11.0 M on CIFAR-100")
def wide_resnet16_8(**kwargs: Any) -> WideResNet:
    """WRN-16-8 (paper base weight decay 1e-4)."""
    return WideResNet(16, **kwargs)


@register_model("wide_resnet28_10", 10, 5e-4, "WRN-28-10, paper 36.5 M")
def wide_resnet28_10(**kwargs: Any) -> WideResNet:
    """WRN-28-10, the paper's main CIFAR model."""
    return WideResNet(28, **kwargs)


@register_model("wide_resnet40_10", 10, 5e-4, "WRN-40-10, paper 55.9 M")
def wide_resnet40_10(**kwargs: Any) -> WideResNet:
    """WRN-40-10."""
    return WideResNet(40, **kwargs)
