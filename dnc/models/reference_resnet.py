"""The SplitNet reference code's CIFAR ResNets: post-activation WRN, ResNet-110/164, ResNeXt-29.

These are the members the paper trained (mzhaoshuai/Divide-and-Co-training, `model/resnet.py`),
rewritten on dnc's `stem -> blocks -> head` skeleton with the same function:

- torchvision-style post-activation blocks: conv-BN-ReLU-conv-BN(-ReLU-conv-BN), shortcut added,
  ReLU after the sum; the stem is conv3x3-BN-ReLU and the head has no norm of its own;
- a shape-changing shortcut is 1x1 conv + BN, and at stride 2 an `AvgPool2d(2)` comes first
  (ResNet-D, "Bag of Tricks"), so no input pixel is skipped;
- kaiming-normal (fan-out) convs, the last BN of every residual branch zero-initialised (each
  block starts as the identity), the classifier drawn from N(0, 1e-3) with zero bias.

The state dict lists the same tensors, in the same order and shapes, as the reference member
at the same split, so the reference's weights load by position and give the same logits
(docs/reference.md has the side-by-side check). Stride 2 sits on the 3x3 conv (ResNet v1.5).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from dnc.models import resnet_cifar, resnext, wide_resnet  # noqa: F401  (their families first)
from dnc.models.layers import (
    Backbone,
    ClassifierHead,
    check_input_dims,
    conv1x1,
    conv3x3,
    on_meta,
    round_channels,
)
from dnc.models.registry import REFERENCE_NAMES, get_spec, register_model  # noqa: F401

CLASSIFIER_STD = 1e-3  # reference: nn.init.normal_(fc.weight, std=1e-3)
EXPANSION = 4  # bottleneck output = 4 x planes


def reference_shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Module | None:
    """None when shapes match; else [AvgPool2d(2) if stride 2] + conv1x1 + BN."""
    if in_ch == out_ch and stride == 1:
        return None
    project = [conv1x1(in_ch, out_ch), nn.BatchNorm2d(out_ch)]
    if stride == 1:
        return nn.Sequential(*project)
    # ceil_mode + count_include_pad=False as in the reference: odd sides average what is there.
    pool = nn.AvgPool2d(stride, stride=stride, ceil_mode=True, count_include_pad=False)
    return nn.Sequential(pool, *project)


class BasicBlock(nn.Module):
    """conv3x3(stride)-BN-ReLU-conv3x3-BN, plus shortcut, then ReLU."""

    def __init__(self, in_ch: int, planes: int, stride: int) -> None:
        super().__init__()
        self.skippable = in_ch == planes and stride == 1
        self.conv1 = conv3x3(in_ch, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = reference_shortcut(in_ch, planes, stride)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        """The residual branch's last BN (zero-initialised); a property, not a second name."""
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_ch, H, W) -> (B, planes, H / stride, W / stride)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class Bottleneck(nn.Module):
    """conv1x1-BN-ReLU-conv3x3(stride, groups)-BN-ReLU-conv1x1-BN, plus shortcut, then ReLU."""

    def __init__(self, in_ch: int, planes: int, stride: int, groups: int, inner: int) -> None:
        super().__init__()
        out_ch = planes * EXPANSION
        self.skippable = in_ch == out_ch and stride == 1
        self.conv1 = conv1x1(in_ch, inner)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = conv3x3(inner, inner, stride, groups=groups)
        self.bn2 = nn.BatchNorm2d(inner)
        self.conv3 = conv1x1(inner, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.shortcut = reference_shortcut(in_ch, out_ch, stride)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        """The residual branch's last BN (zero-initialised)."""
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_ch, H, W) -> (B, 4 * planes, H / stride, W / stride)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class ReferenceResNet(Backbone):
    """Three stages of `depth_per_stage` blocks with planes `planes`; stride 2 at stages 2, 3.

    `groups` and `group_width` shape the bottleneck's inner width the reference way:
    `int(planes * group_width / 64) * groups` (plain ResNet: groups 1, group width 64).
    """

    def __init__(
        self,
        block: Literal["basic", "bottleneck"],
        blocks_per_stage: int,
        stem_channels: int,
        planes: tuple[int, int, int],
        *,
        num_classes: int,
        in_chans: int,
        image_size: int,
        dropout: float = 0.0,
        groups: int = 1,
        group_width: int = 64,
    ) -> None:
        super().__init__(in_chans, image_size)
        check_input_dims(num_classes, in_chans, image_size)
        self.stem = nn.Sequential(
            conv3x3(in_chans, stem_channels), nn.BatchNorm2d(stem_channels), nn.ReLU(inplace=True)
        )
        blocks: list[nn.Module] = []
        in_ch = stem_channels
        for stage, stage_planes in enumerate(planes):
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                if block == "basic":
                    blocks.append(BasicBlock(in_ch, stage_planes, stride))
                    in_ch = stage_planes
                else:
                    inner = int(stage_planes * group_width / 64) * groups
                    blocks.append(Bottleneck(in_ch, stage_planes, stride, groups, inner))
                    in_ch = stage_planes * EXPANSION
        self.blocks = nn.Sequential(*blocks)
        self.num_features = in_ch
        self.head = ClassifierHead(in_ch, num_classes, dropout)
        self.init_weights()

    def init_weights(self) -> None:
        """Backbone init, then N(0, 1e-3) classifier and zero gamma on each branch's last BN."""
        if on_meta(self):
            return
        super().init_weights()
        nn.init.normal_(self.head.fc.weight, std=CLASSIFIER_STD)
        for block in self.blocks:
            nn.init.zeros_(block.last_bn.weight)


def _stage_count(depth: int, per_block: int, offset: int, what: str) -> int:
    if (depth - offset) % per_block != 0 or depth < per_block + offset:
        raise ValueError(f"{what} depth must be {per_block}n + {offset} with n >= 1, got {depth}")
    return (depth - offset) // per_block


def reference_wide_resnet(depth: int, *, width: float, **kwargs: Any) -> ReferenceResNet:
    """Post-activation WRN-depth-k, k = `width` (the divided widen factor); 16-channel stem."""
    if width <= 0:
        raise ValueError(f"widen factor must be positive, got {width}")
    n = _stage_count(depth, 6, 4, "WRN")
    planes = (round_channels(16 * width), round_channels(32 * width), round_channels(64 * width))
    return ReferenceResNet("basic", n, 16, planes, **kwargs)


def reference_resnet(depth: int, *, width: float, **kwargs: Any) -> ReferenceResNet:
    """Bottleneck ResNet-depth with base width `width` (16 -> 12 / 8 at S = 2 / 4)."""
    if width <= 0:
        raise ValueError(f"base width must be positive, got {width}")
    n = _stage_count(depth, 9, 2, "bottleneck ResNet")
    base = round_channels(width)
    return ReferenceResNet("bottleneck", n, base, (base, 2 * base, 4 * base), **kwargs)


def reference_resnext(
    depth: int, group_width: int, *, width: float, **kwargs: Any
) -> ReferenceResNet:
    """ResNeXt-depth with cardinality `width` (divided by S) and `group_width` per group."""
    if width <= 0:
        raise ValueError(f"cardinality must be positive, got {width}")
    n = _stage_count(depth, 9, 2, "ResNeXt")
    groups = round_channels(width)
    return ReferenceResNet(
        "bottleneck", n, 64, (64, 128, 256), groups=groups, group_width=group_width, **kwargs
    )


def _twin(name: str, text: str, dropout: float = 0.0) -> Any:
    """`register_model` for `<name>_ref`, the reference twin of preact variant `name`.

    Family, default width and paper weight decay are the preact variant's; the registry
    records the pair in REFERENCE_NAMES, which `model.style: reference` follows.
    """
    spec = get_spec(name)
    return register_model(
        f"{name}_ref",
        spec.default_width,
        spec.base_weight_decay,
        f"{text}, reference post-activation",
        family=spec.family,
        style="reference",
        twin_of=name,
        default_dropout=dropout,
    )


@_twin("wide_resnet16_8", "WRN-16-8")
def wide_resnet16_8_ref(**kwargs: Any) -> ReferenceResNet:
    """Reference WRN-16-8 (two blocks per stage)."""
    return reference_wide_resnet(16, **kwargs)


@_twin("wide_resnet28_10", "WRN-28-10")
def wide_resnet28_10_ref(**kwargs: Any) -> ReferenceResNet:
    """Reference WRN-28-10 (four blocks per stage)."""
    return reference_wide_resnet(28, **kwargs)


@_twin("wide_resnet40_10", "WRN-40-10, head dropout 0.1 / S", dropout=0.1)
def wide_resnet40_10_ref(**kwargs: Any) -> ReferenceResNet:
    """Reference WRN-40-10; `model.dropout: null` gives the reference's head dropout 0.1 / S."""
    return reference_wide_resnet(40, **kwargs)


@_twin("bottleneck_resnet110", "bottleneck ResNet-110")
def bottleneck_resnet110_ref(**kwargs: Any) -> ReferenceResNet:
    """Reference ResNet-110: 12 bottlenecks per stage."""
    return reference_resnet(110, **kwargs)


@_twin("bottleneck_resnet164", "bottleneck ResNet-164")
def bottleneck_resnet164_ref(**kwargs: Any) -> ReferenceResNet:
    """Reference ResNet-164: 18 bottlenecks per stage."""
    return reference_resnet(164, **kwargs)


@_twin("resnext29_8x64d", "ResNeXt-29 8x64d")
def resnext29_8x64d_ref(**kwargs: Any) -> ReferenceResNet:
    """Reference ResNeXt-29 8x64d (cardinality divided by S)."""
    return reference_resnext(29, 64, **kwargs)


@_twin("resnext29_16x64d", "ResNeXt-29 16x64d")
def resnext29_16x64d_ref(**kwargs: Any) -> ReferenceResNet:
    """Reference ResNeXt-29 16x64d (cardinality divided by S)."""
    return reference_resnext(29, 64, **kwargs)
