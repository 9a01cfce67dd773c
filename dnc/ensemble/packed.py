"""Packed layers: S same-shaped layers stacked into one that computes all S at once.

A packed tensor holds member s's channels in block s of the channel dim: (B, S*C, H, W).
Each packed leaf can compute only the first `active` members (a k-of-S prefix) by slicing
its leading blocks, which are views, so a prefix costs k/S of the full work.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

# How a member tensor sits in the packed one: concatenated along dim 0, stacked as a new
# dim 0, or one value shared by all members (BatchNorm's step counter).
Layout = Literal["cat", "stack", "shared"]

# Layers that act per element or per channel and own no weights: they run on packed tensors
# unchanged. Unknown weightless layers also pass; the verification in FusedSplitNet catches
# one that mixes channels.
PASSTHROUGH = (
    nn.Identity,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.SiLU,
    nn.GELU,
    nn.Sigmoid,
    nn.Hardswish,
    nn.Dropout,
    nn.Dropout2d,
    nn.AdaptiveAvgPool2d,
    nn.AvgPool2d,
    nn.MaxPool2d,
    nn.Flatten,
)


class UnsupportedModuleError(TypeError):
    """The members hold a layer that cannot be packed exactly."""


class PackedLeaf(nn.Module):
    """A packed layer: `member_layout` says how each tensor maps to the members' ones."""

    member_layout: dict[str, Layout]

    def __init__(self, split: int) -> None:
        super().__init__()
        self.split = split
        self.active = split  # members computed by the next forward (set by FusedSplitNet)

    def _take(self, tensor: Tensor | None, per_member: int) -> Tensor | None:
        """Leading `active` member blocks of a cat-layout tensor (a view)."""
        if tensor is None or self.active == self.split:
            return tensor
        return tensor[: self.active * per_member]

    def unpack(self, name: str, tensor: Tensor) -> list[Tensor]:
        """The S member tensors (views) of packed tensor `name`."""
        layout = self.member_layout[name]
        if layout == "shared":
            return [tensor] * self.split
        if layout == "stack":
            return list(tensor.unbind(0))
        return list(tensor.chunk(self.split, dim=0))

    def pack(self, name: str, tensors: list[Tensor]) -> Tensor:
        """Packed tensor `name` from the S member tensors."""
        layout = self.member_layout[name]
        if len({tuple(t.shape) for t in tensors}) != 1:
            raise UnsupportedModuleError(f"{name}: members' shapes differ")
        if layout == "shared":
            return tensors[0].clone()
        if layout == "stack":
            return torch.stack(tensors)
        return torch.cat(tensors)


def _same(modules: list[nn.Module], *attrs: str) -> None:
    for attr in attrs:
        if len({repr(getattr(m, attr)) for m in modules}) != 1:
            raise UnsupportedModuleError(f"{type(modules[0]).__name__}.{attr} differs")


class PackedConv2d(PackedLeaf):
    """S convolutions as one with S times the groups: weight (S*out, in/groups, kh, kw)."""

    member_layout = {"weight": "cat", "bias": "cat"}

    def __init__(self, convs: list[nn.Conv2d]) -> None:
        super().__init__(len(convs))
        _same(convs, "stride", "padding", "dilation", "groups", "padding_mode")
        if convs[0].padding_mode != "zeros":
            raise UnsupportedModuleError("Conv2d padding_mode other than zeros")
        c = convs[0]
        self.stride, self.padding, self.dilation, self.groups = (
            c.stride,
            c.padding,
            c.dilation,
            c.groups,
        )
        self.out_channels = c.out_channels
        self.weight = nn.Parameter(self.pack("weight", [m.weight.detach() for m in convs]))
        bias = None if c.bias is None else self.pack("bias", [m.bias.detach() for m in convs])
        self.bias = None if bias is None else nn.Parameter(bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, k*in, H, W) -> (B, k*out, H', W') for the `active` = k leading members."""
        weight = self._take(self.weight, self.out_channels)
        bias = self._take(self.bias, self.out_channels)
        groups = self.groups * self.active
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups)


class PackedBatchNorm(PackedLeaf):
    """S BatchNorms over C channels as one over S*C: per-channel stats, so exact."""

    member_layout = {
        "weight": "cat",
        "bias": "cat",
        "running_mean": "cat",
        "running_var": "cat",
        "num_batches_tracked": "shared",
    }

    def __init__(self, norms: list[_BatchNorm]) -> None:
        super().__init__(len(norms))
        _same(norms, "eps", "momentum", "affine", "track_running_stats")
        n = norms[0]
        if not n.track_running_stats:
            raise UnsupportedModuleError("BatchNorm without running stats")
        self.eps, self.momentum, self.num_features = n.eps, n.momentum, n.num_features
        for name in ("weight", "bias"):
            value = None if getattr(n, name) is None else [getattr(m, name) for m in norms]
            packed = None if value is None else nn.Parameter(self._pack_list(name, value))
            setattr(self, name, packed)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            self.register_buffer(name, self._pack_list(name, [getattr(m, name) for m in norms]))

    def _pack_list(self, name: str, tensors: list[Tensor]) -> Tensor:
        return self.pack(name, [t.detach() for t in tensors])

    def forward(self, x: Tensor) -> Tensor:
        """BatchNorm over the `active` leading members' channels; updates their stats."""
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm
                momentum = 1.0 / float(self.num_batches_tracked)
        c = self.num_features
        return F.batch_norm(
            x,
            self._take(self.running_mean, c),
            self._take(self.running_var, c),
            self._take(self.weight, c),
            self._take(self.bias, c),
            self.training,
            momentum,
            self.eps,
        )


class PackedLinear(PackedLeaf):
    """S linear layers as one batched matmul: weight (S, out, in), bias (S, out)."""

    member_layout = {"weight": "stack", "bias": "stack"}

    def __init__(self, linears: list[nn.Linear]) -> None:
        super().__init__(len(linears))
        self.weight = nn.Parameter(self.pack("weight", [m.weight.detach() for m in linears]))
        has_bias = linears[0].bias is not None
        bias = self.pack("bias", [m.bias.detach() for m in linears]) if has_bias else None
        self.bias = None if bias is None else nn.Parameter(bias)

    def forward(self, x: Tensor) -> Tensor:
        """(..., k*in) -> (..., k*out) for the `active` = k leading members."""
        k = self.active
        weight = self.weight[:k]  # (k, out, in)
        lead = x.shape[:-1]
        x = x.reshape(-1, k, weight.shape[-1]).transpose(0, 1)  # (k, N, in)
        if self.bias is None:
            out = torch.bmm(x, weight.transpose(1, 2))
        else:
            out = torch.baddbmm(self.bias[:k].unsqueeze(1), x, weight.transpose(1, 2))
        return out.transpose(0, 1).reshape(*lead, -1)  # (..., k*out)


def pack_modules(modules: list[nn.Module]) -> nn.Module:
    """One packed module computing all of `modules` (same architecture) at once.

    Convolutions, BatchNorms and linear layers are packed; weightless layers and the
    members' own container/block classes are reused, their children packed recursively.
    """
    first = modules[0]
    if len({type(m) for m in modules}) != 1:
        raise UnsupportedModuleError("members are not of one architecture")
    if isinstance(first, nn.Conv2d):
        return PackedConv2d(modules)  # type: ignore[arg-type]
    if isinstance(first, _BatchNorm):
        return PackedBatchNorm(modules)  # type: ignore[arg-type]
    if isinstance(first, nn.Linear):
        return PackedLinear(modules)  # type: ignore[arg-type]
    if first._parameters or first._buffers:
        raise UnsupportedModuleError(f"{type(first).__name__} owns weights dnc cannot pack")
    if isinstance(first, PASSTHROUGH) or not first._modules:
        return copy.deepcopy(first)
    names = list(first._modules)
    if any(list(m._modules) != names for m in modules):
        raise UnsupportedModuleError(f"{type(first).__name__}: members' children differ")
    # A shallow copy keeps the block's forward code and settings; only its children change.
    clone = copy.copy(first)
    clone._parameters, clone._buffers = OrderedDict(), OrderedDict()
    clone._modules = OrderedDict(
        (name, None if child is None else pack_modules([m._modules[name] for m in modules]))
        for name, child in first._modules.items()
    )
    return clone
