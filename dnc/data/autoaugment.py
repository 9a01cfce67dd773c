"""AutoAugment (CIFAR-10 policy) drawn independently for every image of a batch.

The SplitNet reference trains every CIFAR member on its own AutoAugment view
(`dataset/autoaugment.py`, CIFAR10Policy after crop and flip). torchvision's AutoAugment
draws one sub-policy per call, so a batched call would give a whole batch the same
operation; here each image gets its own call, with the global RNG forked and seeded from the
batch's generator so the views stay a pure function of (seed, epoch, batch).

The policy is the same 25 sub-policies of the AutoAugment paper; torchvision's magnitude
tables, used here, differ slightly from the reference's copy. Fill 128 (mid-grey) as the
reference fills rotated, sheared and translated corners.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch
from torch import Tensor

FILL = 128  # reference `fillcolor=(128, 128, 128)`


@cache
def cifar10_policy(fill: int = FILL) -> Any:
    """torchvision v2 AutoAugment with the CIFAR-10 policy (built once; torchvision is slow)."""
    from torchvision.transforms import v2

    return v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10, fill=fill)


def per_sample_autoaugment(images: Tensor, generator: torch.Generator) -> Tensor:
    """uint8 (N, C, H, W) -> the same shape, each image through its own policy draw."""
    if images.dtype != torch.uint8:
        raise ValueError(f"AutoAugment expects uint8 images, got {images.dtype}")
    policy = cifar10_policy()
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    out = torch.empty_like(images)
    with torch.random.fork_rng(devices=[]):  # torchvision draws from the global CPU RNG
        torch.manual_seed(seed)
        for i in range(len(images)):
            out[i] = policy(images[i])
    return out
