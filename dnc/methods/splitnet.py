"""Divide-and-co-train (SplitNet, arXiv 2011.14660): S members of width ~W/sqrt(S) whose
loss is the sum of their cross-entropies plus w(t) * Jensen-Shannon; the `splitnet` method."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dnc.config import Params, Section
from dnc.data import DatasetInfo
from dnc.ensemble.fused import execution_model
from dnc.ensemble.parallel import inference_model
from dnc.ensemble.splitnet import SplitNet, build_splitnet
from dnc.evaluation.evaluate import curve_rows, evaluate_splitnet
from dnc.methods.base import Task, register_method
from dnc.models import create_model, divide_weight_decay, member_config
from dnc.train.losses import cot_weight_at, draw_mixup, js_divergence, mixed_cross_entropy


class CoTrainingTask(Task):
    """Loss = sum_i CE_i + w(epoch) * JSD(members); S=1 is plain supervised training."""

    def __init__(
        self,
        model: SplitNet,
        cot_weight: float,
        cot_warmup_epochs: float,
        mixup_alpha: float = 0.0,
        label_smoothing: float = 0.0,
        cot_warmup_per_epoch: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.num_views = model.split_factor
        self.cot_weight = cot_weight
        self.cot_warmup_epochs = cot_warmup_epochs
        self.cot_warmup_per_epoch = cot_warmup_per_epoch
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
            weight = cot_weight_at(
                epoch, self.cot_weight, self.cot_warmup_epochs, self.cot_warmup_per_epoch
            )
            if weight > 0:
                js = js_divergence(logits)
                loss = loss + weight * js
            else:  # independent members: the JSD is only measured, it is not in the loss
                with torch.no_grad():
                    js = js_divergence(logits.detach())
            out["js"] = js.detach()
            out["cot_weight"] = torch.tensor(weight)
        out["ce"] = ce.sum().detach()
        out["loss"] = loss
        return out

    def eval_logits(self, images: Tensor) -> Tensor:
        return self.model(images)


def member_config_of(params: Params) -> dict[str, float]:
    """Width and head dropout of one member of the SplitNet of `params`."""
    m, s = params.model, params.split
    return member_config(m.variant, m.width, m.dropout, s.factor, s.divide_dropout)


def member_net(params: Params, info: DatasetInfo) -> nn.Module:
    """One member of the SplitNet of `params` (width and dropout divided)."""
    cfg = member_config_of(params)
    return create_model(
        params.model.variant,
        num_classes=info.num_classes,
        in_chans=info.in_chans,
        image_size=info.image_size,
        width=cfg["width"],
        dropout=cfg["dropout"],
    )


class SplitNetConfig(Section):
    """SplitNet's own section is empty: its knobs are the shared `split` and `train` keys.

    It exists so that every method has a section named like it, which is what lets the DVC
    stages depend on `${method}` (the selected method's section) and nothing else.
    """


@register_method
class SplitNetMethod:
    """S co-trained members; `split.execution: fused` trains them as one packed net."""

    name = "splitnet"
    config: type[Section] = SplitNetConfig
    searchable = True
    curve_name = "splitnet"  # the label of its accuracy-vs-MACs curve points

    def check(self, params: Params, info: DatasetInfo) -> None:
        pass  # nothing beyond the model registry look-up

    def build_model(self, params: Params, info: DatasetInfo) -> nn.Module:
        torch.manual_seed(params.seed)
        return build_splitnet(
            params.model.variant,
            split=params.split.factor,
            num_classes=info.num_classes,
            in_chans=info.in_chans,
            image_size=info.image_size,
            width=params.model.width,
            dropout=params.model.dropout,
            divide_dropout=params.split.divide_dropout,
            ensemble=params.split.ensemble,
        )

    def build_task(self, params: Params, model: nn.Module) -> Task:
        t = params.train
        # fused: one packed net trains; checkpoints keep the loop layout.
        trained = execution_model(model, params.split.execution)
        return CoTrainingTask(
            trained,
            t.cot_weight,
            t.cot_warmup_epochs,
            t.mixup_alpha,
            t.label_smoothing,
            t.cot_warmup_per_epoch,
        )

    def weight_decay(self, params: Params) -> float:
        s = params.split
        return divide_weight_decay(params.train.weight_decay, s.factor, s.divide_weight_decay)

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
        model = inference_model(model, devices, params.split.execution, device)
        metrics = evaluate_splitnet(
            model, loader, shape, device, e.latency_batch_sizes, e.latency_repeats
        )
        metrics["curve"] = curve_rows(metrics["prefixes"], self.name, self.curve_name)
        metrics["config"] = {"split_factor": params.split.factor, **member_config_of(params)}
        # The cascade's stages are the members, in order: it reuses their test logits.
        metrics["cascade_logits"] = metrics.pop("member_logits")
        return metrics

    def cascade_stages(self, model: nn.Module) -> tuple[list[tuple[str, nn.Module]], str]:
        """The members in order, combined by the ensemble's own rule (the cascade's stages)."""
        return [(f"member_{i}", m) for i, m in enumerate(model.members)], model.ensemble

    def info(self, params: Params, info: DatasetInfo) -> dict:
        return {}

    def run_label(self, params: Params) -> str:
        return f"{params.model.variant}-S{params.split.factor}-{params.data.dataset}"
