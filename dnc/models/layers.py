"""Pieces shared by every model family: the classifier head, weight init, channel rounding.

Every dnc model exposes the same skeleton, `stem -> blocks -> head`, so methods that skip
or augment blocks (depth-reduced sub-networks, auxiliary heads) work on any family.
"""

from __future__ import annotations

import torch
from torch import nn


def round_channels(value: float) -> int:
    """Nearest integer channel count, at least 1 (widths may be floats in config)."""
    # floor(x + 0.5), not round(): round() sends .5 to the even neighbour (22.5 -> 22,
    # 23.5 -> 24), which would make the width/cost curve step unevenly.
    return max(1, int(value + 0.5))


def check_input_dims(num_classes: int, in_chans: int, image_size: int) -> None:
    """Raise ValueError when the dataset dimensions cannot feed a model."""
    for key, value in (
        ("num_classes", num_classes),
        ("in_chans", in_chans),
        ("image_size", image_size),
    ):
        if int(value) != value or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")


class ClassifierHead(nn.Module):
    """Global average pool -> flatten -> dropout -> linear, returning logits (B, num_classes).

    `pre_norm` adds the final BN + ReLU that pre-activation networks need before pooling.
    """

    def __init__(
        self, num_features: int, num_classes: int, dropout: float = 0.0, pre_norm: bool = False
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.norm: nn.Module = (
            nn.Sequential(nn.BatchNorm2d(num_features), nn.ReLU(inplace=True))
            if pre_norm
            else nn.Identity()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)  # adaptive: any input resolution works
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map features (B, C, H, W) to logits (B, num_classes)."""
        x = self.flatten(self.pool(self.norm(x)))  # (B, C)
        return self.fc(self.dropout(x))


class Backbone(nn.Module):
    """Base class fixing the `stem -> blocks -> head` layout shared by all families.

    Subclasses set `stem`, `blocks` (every block flattened in order, each with a boolean
    `skippable`), `head` and `num_features`, then call `init_weights`.
    """

    stem: nn.Module
    blocks: nn.Sequential
    head: ClassifierHead
    num_features: int

    def __init__(self, in_chans: int, image_size: int) -> None:
        super().__init__()
        # Recorded so FLOP counters and summaries can build a dummy input without the dataset.
        self.input_size = (in_chans, image_size, image_size)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map (B, num_features, H', W') before the head."""
        return self.blocks(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes)."""
        return self.head(self.forward_features(x))

    def init_weights(self) -> None:
        """Kaiming-normal convs, BN weight 1 / bias 0, linear bias 0."""
        if on_meta(self):
            return
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)


def on_meta(module: nn.Module) -> bool:
    """True for a module built on the meta device: its tensors hold no values, so there is
    nothing to initialise (and meta-device init costs ~70 % of a FLOP count's build)."""
    return any(p.is_meta for p in module.parameters())


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BN always follows or precedes it)."""
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias."""
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)
