"""One network, S augmented views, Jensen-Shannon among its predictions on the views.

The ablation that asks "is it the views or the networks?" (AugMix-style consistency,
arXiv 1912.02781, timm's JsdCrossEntropy): a single network sees `split.factor` = S
differently augmented views of each image, its loss is the mean cross-entropy over the views
plus w(t) * JSD of its S predictive distributions (the same weight and warm-up as SplitNet's
co-training). `multiview.width: member` trains it at the width of one SplitNet member (the
same network, without the other members); `undivided` at the undivided width (the same cost
as SplitNet's whole ensemble). Evaluation is a one-member SplitNet: the network on the
plain test image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from dnc.config import ConfigError, Params, Section
from dnc.data import DatasetInfo
from dnc.ensemble.splitnet import SplitNet
from dnc.evaluation.evaluate import curve_rows, evaluate_splitnet
from dnc.methods.base import Task, register_method
from dnc.models import create_model, divide_weight_decay, member_config
from dnc.train.losses import cot_weight_at, draw_mixup, js_divergence, mixed_cross_entropy


class MultiViewConfig(Section):
    """The width of the one network; S (the number of views) is `split.factor`."""

    width: Literal["member", "undivided"] = "undivided"


class MultiViewTask(Task):
    """Loss = mean_v CE(f(view_v)) + w(epoch) * JSD_v(softmax f(view_v))."""

    def __init__(self, model: SplitNet, views: int, train: Any) -> None:
        super().__init__()
        self.model, self.num_views = model, views
        self.cot_weight, self.cot_warmup_epochs = train.cot_weight, train.cot_warmup_epochs
        self.mixup_alpha, self.label_smoothing = train.mixup_alpha, train.label_smoothing

    def training_step(self, views: Tensor, targets: Tensor, epoch: float) -> dict[str, Tensor]:
        views, mix = draw_mixup(views, targets, self.mixup_alpha)
        v, b = views.shape[:2]
        net = self.model.members[0]
        logits = net(views.flatten(0, 1)).view(v, b, -1)  # one pass over all views: (V, B, C)
        ce = mixed_cross_entropy(logits, targets, mix, self.label_smoothing)  # mean over views
        out: dict[str, Tensor] = {"ce": ce.detach()}
        loss = ce
        weight = cot_weight_at(epoch, self.cot_weight, self.cot_warmup_epochs)
        if v > 1 and weight > 0:
            js = js_divergence(logits)
            loss = loss + weight * js
            out["js"] = js.detach()
        out["cot_weight"] = torch.tensor(weight)
        out["loss"] = loss
        return out

    def eval_logits(self, images: Tensor) -> Tensor:
        return self.model(images)  # (1, B, C)


def network_config(params: Params) -> dict[str, float]:
    """Width and head dropout of the one network (`multiview.width`)."""
    m, s = params.model, params.split
    divided = params.method_config.width == "member"
    return member_config(m.name, m.width, m.dropout, s.factor if divided else 1, s.divide_dropout)


@register_method
class MultiViewMethod:
    """One network trained on `split.factor` views with a JSD consistency term."""

    name = "multiview"
    config: type[Section] = MultiViewConfig
    searchable = False  # the search divides into S members; this method never does
    curve_name = "multiview"

    def check(self, params: Params, info: DatasetInfo) -> None:
        if params.split.factor < 2:
            raise ConfigError("split.factor: multiview needs S >= 2 views (got 1)")

    def build_model(self, params: Params, info: DatasetInfo) -> nn.Module:
        torch.manual_seed(params.seed)
        cfg = network_config(params)
        net = create_model(
            params.model.name,
            num_classes=info.num_classes,
            in_chans=info.in_chans,
            image_size=info.image_size,
            width=cfg["width"],
            dropout=cfg["dropout"],
        )
        return SplitNet([net], params.split.ensemble)

    def build_task(self, params: Params, model: nn.Module) -> Task:
        return MultiViewTask(model, params.split.factor, params.train)

    def weight_decay(self, params: Params) -> float:
        # At member width it is one member of an S-split: the split's rule applies to it.
        s = params.split
        factor = s.factor if params.method_config.width == "member" else 1
        return divide_weight_decay(params.train.weight_decay, factor, s.divide_weight_decay)

    def evaluate(
        self,
        params: Params,
        model: nn.Module,
        loader: Any,
        info: DatasetInfo,
        device: torch.device,
        devices: Sequence[str] | None,
    ) -> dict:
        e = params.eval
        shape = (info.in_chans, info.image_size, info.image_size)
        metrics = evaluate_splitnet(
            model, loader, shape, device, e.latency_batch_sizes, e.latency_repeats
        )
        metrics["curve"] = curve_rows(metrics["prefixes"], self.name, self.curve_name)
        metrics["config"] = {"split_factor": 1, "views": params.split.factor,
                             **network_config(params)}  # fmt: skip
        return metrics

    def info(self, params: Params, info: DatasetInfo) -> dict:
        return {"multiview": {"views": params.split.factor, **network_config(params)}}

    def run_label(self, params: Params) -> str:
        w = params.method_config.width
        return f"{params.model.name}-V{params.split.factor}-{w}-{params.data.dataset}"
