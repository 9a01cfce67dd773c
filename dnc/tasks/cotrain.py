"""Divide-and-co-train: sum of members' cross-entropies plus w(t) * Jensen-Shannon."""

from __future__ import annotations

import torch
from torch import Tensor

from dnc.losses import cot_weight_at, js_divergence, mixed_cross_entropy
from dnc.splitnet import SplitNet
from dnc.tasks.base import Task


def draw_mixup(
    views: Tensor, targets: Tensor, alpha: float
) -> tuple[Tensor, tuple[Tensor, float] | None]:
    """Mixup drawn once per batch and shared by all views (paper: alpha 0.2 on CIFAR)."""
    if alpha <= 0:
        return views, None
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(targets.shape[0], device=targets.device)
    mixed = lam * views + (1.0 - lam) * views[:, perm]  # (V, B, C, H, W)
    return mixed, (targets[perm], lam)


class CoTrainingTask(Task):
    """Loss = sum_i CE_i + w(epoch) * JSD(members); S=1 is plain supervised training."""

    def __init__(
        self,
        model: SplitNet,
        cot_weight: float,
        cot_warmup_epochs: float,
        mixup_alpha: float = 0.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.num_views = model.split_factor
        self.cot_weight = cot_weight
        self.cot_warmup_epochs = cot_warmup_epochs
        self.mixup_alpha = mixup_alpha
        self.label_smoothing = label_smoothing

    def training_step(self, views: Tensor, targets: Tensor, epoch: float) -> dict[str, Tensor]:
        views, mix = draw_mixup(views, targets, self.mixup_alpha)
        logits = self.model(views)  # (S, B, C)
        ce = torch.stack(
            [mixed_cross_entropy(z, targets, mix, self.label_smoothing) for z in logits]
        )  # (S,)
        out: dict[str, Tensor] = {f"ce_{i}": ce_i.detach() for i, ce_i in enumerate(ce)}
        loss = ce.sum()
        if self.model.split_factor > 1:
            weight = cot_weight_at(epoch, self.cot_weight, self.cot_warmup_epochs)
            js = js_divergence(logits)
            loss = loss + weight * js
            out["js"] = js.detach()
            out["cot_weight"] = torch.tensor(weight)
        out["ce"] = ce.sum().detach()
        out["loss"] = loss
        return out

    def eval_logits(self, images: Tensor) -> Tensor:
        return self.model(images)
