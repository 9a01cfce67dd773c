"""PyramidNet with ShakeDrop (Han et al. 2017; Yamada et al. 2018): the paper's headline rows.

Bottleneck PyramidNet-depth, n = (depth - 2) / 9 blocks per stage: every block widens the
trunk by alpha / 3n channels (rounded per block, `int(round(.))` as in the reference), so the
last stage ends at 4 * (16 + alpha) channels. Blocks are pre-activation without a ReLU in
front (BN-conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1-BN), then ShakeDrop; the shortcut is the
identity (AvgPool2d(2) at stride 2) zero-padded to the widened channel count.

The divide rule (reference code, `model/pyramidnet.py`) shrinks the widening: a member of S
has alpha / sqrt(S), passed here as `width`, and ShakeDrop's final drop probability
0.5 / sqrt(S), passed here as `dropout` (the family's dropout rule is p / sqrt(S)); block i of
the 3n draws p_i = final_p * (i + 1) / 3n. The classifier head has no dropout. The state dict
matches the reference member's tensor for tensor; docs/reference.md has the check.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dnc.models.layers import (
    Backbone,
    ClassifierHead,
    check_input_dims,
    conv1x1,
    conv3x3,
    on_meta,
)
from dnc.models.registry import register_family, register_model

STEM_CHANNELS = 16
EXPANSION = 4


def pyramid_alpha(alpha: float, split: int) -> float:
    """Member widening alpha / sqrt(S) (reference: add rate alpha / (3n sqrt(S)))."""
    return alpha / math.sqrt(split)


# Widening alpha / sqrt(S), unrounded; `dropout` is ShakeDrop's final p, divided 0.5 / sqrt(S).
register_family(pyramid_alpha, dropout_rule="sqrt")
# Reference-only (no preact twin); `model.dropout: null` gives the reference's ShakeDrop 0.5.
REFERENCE: dict[str, Any] = {"style": "reference", "default_dropout": 0.5}


class _ShakeDropFunction(torch.autograd.Function):
    """Forward x * a, backward grad * b, per sample, when the batch's gate is closed."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, p_drop: float) -> Tensor:
        # One Bernoulli gate for the whole batch, as the reference draws it; kept as a tensor
        # (torch.where, no .item()) so a 90-block network does not sync the GPU 90 times.
        gate = torch.rand((), device=x.device) >= p_drop
        alpha = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).uniform_(-1, 1)
        ctx.save_for_backward(gate)
        return x * torch.where(gate, torch.ones_like(alpha), alpha)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (gate,) = ctx.saved_tensors
        beta = torch.empty(grad.shape[0], 1, 1, 1, device=grad.device, dtype=grad.dtype)
        beta.uniform_(0, 1)
        return grad * torch.where(gate, torch.ones_like(beta), beta), None


class ShakeDrop(nn.Module):
    """ShakeDrop with drop probability `p_drop`; evaluation scales by the expectation 1 - p."""

    def __init__(self, p_drop: float) -> None:
        super().__init__()
        if not 0.0 <= p_drop < 1.0:
            raise ValueError(f"ShakeDrop probability must be in [0, 1), got {p_drop}")
        self.p_drop = p_drop

    def forward(self, x: Tensor) -> Tensor:
        """Same shape as `x`."""
        if not self.training:
            return (1.0 - self.p_drop) * x
        if self.p_drop == 0.0:
            return x
        return _ShakeDropFunction.apply(x, self.p_drop)

    def extra_repr(self) -> str:
        return f"p_drop={self.p_drop:.4f}"


class PyramidBottleneck(nn.Module):
    """BN-conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1-BN-ShakeDrop + padded shortcut."""

    def __init__(self, in_ch: int, planes: int, stride: int, p_drop: float) -> None:
        super().__init__()
        out_ch = planes * EXPANSION
        self.skippable = in_ch == out_ch and stride == 1
        self.in_ch, self.out_ch = in_ch, out_ch
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = conv1x1(in_ch, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_ch)
        self.bn4 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.shake_drop = ShakeDrop(p_drop)
        self.shortcut = (
            nn.AvgPool2d((2, 2), stride=(2, 2), ceil_mode=True) if stride != 1 else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_ch, H, W) -> (B, 4 * planes, H / stride, W / stride)."""
        out = self.conv1(self.bn1(x))
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        out = self.shake_drop(self.bn4(out))
        shortcut = self.shortcut(x)
        missing = self.out_ch - self.in_ch
        if missing > 0:  # the trunk widened: the extra channels get a zero shortcut
            # Padded per member: a packed input (dnc.packed) holds G members' channels side by
            # side, (B, G * in_ch, H, W); G = 1 for a plain member (the reference's concat).
            groups = shortcut.shape[1] // self.in_ch
            shortcut = shortcut.unflatten(1, (groups, self.in_ch))  # (B, G, in_ch, H', W')
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, missing)).flatten(1, 2)  # (B, G*out_ch, ..)
        return out + shortcut


class PyramidNet(Backbone):
    """Bottleneck PyramidNet-depth with widening `width` (alpha) and final ShakeDrop `dropout`."""

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
            raise ValueError(f"bottleneck PyramidNet depth must be 9n + 2, got {depth}")
        if width <= 0:
            raise ValueError(f"PyramidNet alpha must be positive, got {width}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"ShakeDrop final probability must be in [0, 1), got {dropout}")
        n = (depth - 2) // 9
        add_rate = width / (3 * n)
        self.stem = nn.Sequential(conv3x3(in_chans, STEM_CHANNELS), nn.BatchNorm2d(STEM_CHANNELS))
        blocks: list[nn.Module] = []
        in_ch, trunk = STEM_CHANNELS, float(STEM_CHANNELS)
        for i in range(3 * n):
            trunk += add_rate
            stride = 2 if i in (n, 2 * n) else 1
            # round() as the reference (half to even), not round_channels: same widths.
            planes = int(round(trunk))
            p_drop = dropout * (i + 1) / (3 * n)
            blocks.append(PyramidBottleneck(in_ch, planes, stride, p_drop))
            in_ch = planes * EXPANSION
        self.blocks = nn.Sequential(*blocks)
        self.num_features = in_ch
        self.head = ClassifierHead(in_ch, num_classes, 0.0, pre_norm=True)
        self.init_weights()

    def init_weights(self) -> None:
        """Convs N(0, 2 / (k^2 out)), BN 1 / 0; the classifier keeps PyTorch's default init."""
        if on_meta(self):
            return
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)


@register_model("pyramidnet20", 24, 1e-4, "tiny PyramidNet-20, alpha 24, for tests", **REFERENCE)
def pyramidnet20(**kwargs: Any) -> PyramidNet:
    """PyramidNet-20: two bottlenecks per stage."""
    return PyramidNet(20, **kwargs)


@register_model("pyramidnet164", 270, 1e-4, "PyramidNet-164 alpha 270 + ShakeDrop", **REFERENCE)
def pyramidnet164(**kwargs: Any) -> PyramidNet:
    """PyramidNet-164 (bottleneck), alpha 270."""
    return PyramidNet(164, **kwargs)


@register_model("pyramidnet272", 200, 1e-4, "PyramidNet-272 alpha 200 + ShakeDrop", **REFERENCE)
def pyramidnet272(**kwargs: Any) -> PyramidNet:
    """PyramidNet-272 (bottleneck), alpha 200: the paper's 98.71 % CIFAR-10 row."""
    return PyramidNet(272, **kwargs)
