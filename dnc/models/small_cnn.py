"""Small residual CNN: the default model, sized for 28x28 grayscale images on a laptop CPU.

A 3x3 stem (stride 2 for images above 16 pixels), then three stages of w, 2w, 4w channels.
Each stage is one residual block (skippable), and stages are joined by stride-2 3x3 conv
transitions. Division shrinks every channel count: w -> round(w / sqrt(S)), at least 1.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dnc.models.layers import Backbone, ClassifierHead, check_input_dims, conv3x3, round_channels
from dnc.models.registry import register_family, register_model


class ResidualBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus identity, then ReLU; shape-preserving."""

    skippable = True

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + x)


class Transition(nn.Sequential):
    """Stride-2 conv3x3-BN-ReLU between stages; changes shape, so never skippable."""

    skippable = False

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(conv3x3(in_ch, out_ch, stride=2), nn.BatchNorm2d(out_ch), nn.ReLU(True))


class SmallCNN(Backbone):
    """Residual CNN with base width `width` (stages of w, 2w, 4w channels)."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_chans: int,
        image_size: int,
        width: float,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(in_chans, image_size)
        check_input_dims(num_classes, in_chans, image_size)
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        w = round_channels(width)
        # Stride-2 stem on 28x28 and larger: full-resolution blocks would cost ~4x the MACs,
        # and the model must stay fast on 2 CPU cores. Tiny images (8x8 digits) keep their
        # resolution; downsampling them early cost ~20 points of early-training accuracy.
        stem_stride = 1 if image_size <= 16 else 2
        self.stem = nn.Sequential(
            conv3x3(in_chans, w, stride=stem_stride), nn.BatchNorm2d(w), nn.ReLU(inplace=True)
        )
        self.blocks = nn.Sequential(
            ResidualBlock(w),
            Transition(w, 2 * w),
            ResidualBlock(2 * w),
            Transition(2 * w, 4 * w),
            ResidualBlock(4 * w),
        )
        self.num_features = 4 * w
        self.head = ClassifierHead(4 * w, num_classes, dropout)
        self.init_weights()


def split_channels(width: float, split: int) -> float:
    """Member base channels w / sqrt(S): parameters scale with width^2, so each member
    gets about 1/S of them."""
    return float(round_channels(width / math.sqrt(split)))


register_family(split_channels, dropout_rule="linear")  # head dropout p / S


@register_model("small_cnn", 32, 5e-4, "small residual CNN (default model)")
def small_cnn(**kwargs: Any) -> SmallCNN:
    """Small residual CNN, base width 32 by default."""
    return SmallCNN(**kwargs)
