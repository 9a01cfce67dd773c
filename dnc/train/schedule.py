"""Per-iteration learning-rate schedule: linear slow start, then cosine (paper recipe).

Two ways to keep the cosine above `min_lr` (`train.lr_floor`): `blend` (dnc's default)
rescales the cosine to end at `min_lr`; `clamp` is the reference code's
`max(0.5 lr (1 + cos), min_lr)`, equal to its `utils/lr_scheduler.py` step for step
(docs/reference.md). On the 300-epoch CIFAR recipe the two part by more than 1 % from epoch
~245, and `blend` is up to 2x higher from epoch ~294, where `clamp` sits on the floor.
"""

from __future__ import annotations

import math
from typing import Literal

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from dnc.config import TrainConfig

Floor = Literal["blend", "clamp"]


def lr_at(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Learning rate at optimiser step `step` (0-based), floored as `cfg.lr_floor` says."""
    floor: Floor = cfg.lr_floor
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    total = cfg.epochs * steps_per_epoch
    if step < warmup:
        lr = cfg.warmup_lr + (cfg.lr - cfg.warmup_lr) * step / warmup
        return max(lr, cfg.min_lr) if floor == "clamp" else lr
    progress = (step - warmup) / max(1, total - warmup)
    cosine = 1 + math.cos(math.pi * min(progress, 1.0))
    if floor == "clamp":
        return max(0.5 * cfg.lr * cosine, cfg.min_lr)
    if floor != "blend":
        raise ValueError(f"unknown lr floor {floor!r}; use blend or clamp")
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * cosine


def build_scheduler(optimizer: Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> LambdaLR:
    """LambdaLR stepping every iteration; the optimiser's base lr must be `cfg.lr`."""
    return LambdaLR(optimizer, lambda step: lr_at(step, steps_per_epoch, cfg) / cfg.lr)
