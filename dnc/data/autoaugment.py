"""AutoAugment (CIFAR-10 policy) drawn independently for every image of a batch.

The SplitNet reference trains every CIFAR member on its own AutoAugment view
(`dataset/autoaugment.py`, CIFAR10Policy after crop and flip). torchvision's AutoAugment
draws one sub-policy per call, so one call on a batch would give every image the same
operations. Here each image draws its own sub-policy, application coins and signs from the
batch's generator (so views stay a pure function of (seed, epoch, batch)); images that drew the
same operations are then transformed together, one torchvision op per group: every op in the
policy acts on each image alone, so this equals one call per image at a fraction of the cost.

The policy is the AutoAugment paper's 25 CIFAR-10 sub-policies with torchvision's magnitude
table, which differs slightly from the reference's copy. Fill 128 (mid-grey), as the reference
fills rotated, sheared and translated corners.
"""

from __future__ import annotations

from collections import defaultdict
from functools import cache
from typing import Any

import torch
from torch import Tensor

FILL = 128  # reference `fillcolor=(128, 128, 128)`
Ops = tuple[tuple[str, float], ...]  # (transform id, signed magnitude) in application order


@cache
def cifar10_policy(fill: int = FILL) -> Any:
    """torchvision v2 AutoAugment with the CIFAR-10 policy (built once; torchvision is slow)."""
    from torchvision.transforms import v2

    return v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10, fill=fill)


def draw_ops(n: int, height: int, width: int, generator: torch.Generator) -> list[Ops]:
    """Each of `n` images' operations, drawn as torchvision's AutoAugment.forward draws them."""
    policy = cifar10_policy()
    dev = generator.device
    choice = torch.randint(len(policy._policies), (n,), generator=generator, device=dev).tolist()
    coins = torch.rand(n, 2, generator=generator, device=dev).tolist()
    signs = torch.rand(n, 2, generator=generator, device=dev).tolist()
    drawn: list[Ops] = []
    for i in range(n):
        ops = []
        for j, (op, probability, level) in enumerate(policy._policies[choice[i]]):
            if not coins[i][j] <= probability:
                continue
            magnitudes_fn, signed = policy._AUGMENTATION_SPACE[op]
            magnitudes = magnitudes_fn(10, height, width)
            magnitude = 0.0 if magnitudes is None else float(magnitudes[level])
            if magnitudes is not None and signed and signs[i][j] <= 0.5:
                magnitude = -magnitude
            ops.append((op, magnitude))
        drawn.append(tuple(ops))
    return drawn


def apply_ops(images: Tensor, ops: list[Ops]) -> Tensor:
    """uint8 (N, C, H, W) with image i put through `ops[i]`; equal-ops images go as one batch."""
    policy = cifar10_policy()
    groups: dict[Ops, list[int]] = defaultdict(list)
    for i, image_ops in enumerate(ops):
        groups[image_ops].append(i)
    out = images.clone()
    for image_ops, members in groups.items():
        if not image_ops:
            continue
        index = torch.tensor(members, device=images.device)
        batch = images.index_select(0, index)  # (G, C, H, W)
        for op, magnitude in image_ops:
            batch = policy._apply_image_or_video_transform(
                batch, op, magnitude, interpolation=policy.interpolation, fill=policy._fill
            )
        out.index_copy_(0, index, batch)
    return out


def per_sample_autoaugment(images: Tensor, generator: torch.Generator) -> Tensor:
    """uint8 (N, C, H, W) -> the same shape, each image through its own policy draw."""
    if images.dtype != torch.uint8:
        raise ValueError(f"AutoAugment expects uint8 images, got {images.dtype}")
    n, _, height, width = images.shape
    return apply_ops(images, draw_ops(n, height, width, generator))
