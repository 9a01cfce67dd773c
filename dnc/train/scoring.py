"""Scoring over a loader: stacked member logits, then per-member and ensemble accuracy/NLL.

The engine validates every epoch with `validate`; the test evaluation and the methods score
with the same `collect_logits` and `score`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from dnc.train.losses import EnsembleHow, ensemble_log_probs

if TYPE_CHECKING:  # the methods import this scoring; typing only here
    from dnc.methods.base import Task


@torch.no_grad()
def collect_logits(
    module: torch.nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    device: torch.device,
    forward: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Stacked logits (M, N, C) float32 on CPU and labels (N,) over a loader.

    `forward` defaults to the module itself (a SplitNet returns its members' logits).
    """
    module.eval()
    forward = forward or module
    logits, labels = [], []
    for images, targets in loader:
        logits.append(forward(images.to(device)).float().cpu())
        labels.append(targets)
    return torch.cat(logits, dim=1), torch.cat(labels)


def score(logits: Tensor, labels: Tensor, how: EnsembleHow) -> dict[str, float]:
    """Per-member and ensemble accuracy (%) and NLL from stacked logits (M, N, C)."""
    out: dict[str, float] = {}
    for i, z in enumerate(logits):
        log_p = F.log_softmax(z, dim=-1)
        out[f"member_{i}/acc"] = 100.0 * (log_p.argmax(-1) == labels).float().mean().item()
        out[f"member_{i}/nll"] = F.nll_loss(log_p, labels).item()
    log_p = ensemble_log_probs(logits, how)
    out["ensemble/acc"] = 100.0 * (log_p.argmax(-1) == labels).float().mean().item()
    out["ensemble/nll"] = F.nll_loss(log_p, labels).item()
    return out


def validate(
    task: Task, loader: Iterable[tuple[Tensor, Tensor]], device: torch.device, how: EnsembleHow
) -> dict[str, float]:
    """Validation metrics, prefixed `val/`."""
    logits, labels = collect_logits(task, loader, device, task.eval_logits)
    return {f"val/{k}": v for k, v in score(logits, labels, how).items()}
