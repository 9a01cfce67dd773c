"""Auxiliary over-parameterisation (Liu, Zhuang, Shen, Chen, Yin; arXiv 1909.02214): its
params section, its loss, and the `auxiliary` method.

The compact net is the SplitNet of `model`/`split`; the training-only wide path
(`dnc.methods.auxiliary_net`) is dropped for inference, so the checkpoint, params and MACs
are the SplitNet's alone.
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
from pydantic import BeforeValidator, Field
from torch import Tensor, nn

from dnc.config import Params, Section, block_indices
from dnc.data import DatasetInfo
from dnc.ensemble.splitnet import SplitNet
from dnc.evaluation.flops import count_params
from dnc.methods.auxiliary_net import attach_points, build_auxiliary, forward_with_features
from dnc.methods.base import Task, config_error, register_method
from dnc.methods.splitnet import SplitNetMethod, member_config_of, member_net
from dnc.train.losses import (
    cot_weight_at,
    distillation_kl,
    draw_mixup,
    js_divergence,
    mixed_cross_entropy,
)


def _attach_spec(value: Any) -> list[int] | str:
    if isinstance(value, str):
        if value not in ("all", "auto"):
            raise ValueError(f"expected 'all', 'auto' or block indices, got {value!r}")
        return value
    return block_indices(value, "'all', 'auto' or a list of block indices")


AttachSpec = Annotated[list[int] | str, BeforeValidator(_attach_spec)]


class AuxiliaryConfig(Section):
    """Auxiliary over-parameterisation of a compact net (arXiv 1909.02214)."""

    width_factor: float = Field(2.0, ge=1)  # auxiliary path width = member width x this
    # Compact blocks whose outputs feed the auxiliary path: all, a list of block indices, or
    # auto = every block behind learned hierarchical (stage x block) gates.
    attach: AttachSpec = "all"
    aux_weight: float = Field(1.0, ge=0)  # label CE on the auxiliary head
    kd_weight: float = Field(1.0, ge=0)  # KD auxiliary -> compact
    kd_warmup_epochs: float = Field(1.0, ge=0)  # kd_weight ramps up linearly over these epochs
    temperature: float = Field(1.0, gt=0)  # 4 made the compact net diverge early
    gate_penalty: float = Field(0.0, ge=0)  # auto only: cost on the mean gate (sparser structure)


class AuxiliaryTask(Task):
    """Co-training loss of the compact SplitNet (sum of CE, + w(t) * JSD when S > 1) plus,
    per member, aux_weight * CE(auxiliary head) + kd_weight * KD(auxiliary -> member)
    + gate_penalty * mean gate. `model` is the compact SplitNet alone: what inference keeps.
    """

    def __init__(
        self,
        model: SplitNet,
        auxiliary: nn.ModuleList,
        cfg: AuxiliaryConfig,
        cot_weight: float,
        cot_warmup_epochs: float,
        mixup_alpha: float = 0.0,
        label_smoothing: float = 0.0,
        cot_warmup_per_epoch: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.auxiliary = auxiliary
        self.cot_warmup_per_epoch = cot_warmup_per_epoch
        self.cfg = cfg
        self.num_views = model.split_factor
        self.cot_weight, self.cot_warmup_epochs = cot_weight, cot_warmup_epochs
        self.mixup_alpha, self.label_smoothing = mixup_alpha, label_smoothing

    def training_step(self, views: Tensor, targets: Tensor, epoch: float) -> dict[str, Tensor]:
        views, mix = draw_mixup(views, targets, self.mixup_alpha)
        compact, wide = [], []
        for member, aux, view in zip(self.model.members, self.auxiliary, views, strict=True):
            logits, feats = forward_with_features(member, view)
            compact.append(logits)
            wide.append(aux(view, feats))
        logits = torch.stack(compact)  # (S, B, C)

        def ce(z: Tensor) -> Tensor:
            return mixed_cross_entropy(z, targets, mix, self.label_smoothing)

        ce_members = torch.stack([ce(z) for z in compact])  # (S,)
        ce_aux = torch.stack([ce(z) for z in wide]).sum()
        t = self.cfg.temperature
        kd = torch.stack(
            [distillation_kl(c, w, t) for c, w in zip(compact, wide, strict=True)]
        ).sum()
        ramp = cot_weight_at(epoch, 1.0, self.cfg.kd_warmup_epochs)
        loss = ce_members.sum() + self.cfg.aux_weight * ce_aux + ramp * self.cfg.kd_weight * kd
        out = {
            "ce": ce_members.sum(),
            "ce_aux": ce_aux,
            "kd_aux": kd,
            "kd_ramp": torch.tensor(ramp),
        }
        if self.model.split_factor > 1:
            per_epoch = self.cot_warmup_per_epoch
            weight = cot_weight_at(epoch, self.cot_weight, self.cot_warmup_epochs, per_epoch)
            out["js"] = js_divergence(logits)
            loss = loss + weight * out["js"]
        if self.cfg.attach == "auto":
            gates = [g for aux in self.auxiliary for g in aux.gates().values()]
            mean_gate = torch.stack(gates).mean()
            loss = loss + self.cfg.gate_penalty * mean_gate
            out["mean_gate"] = mean_gate
            out.update({f"gate_{i}": g for i, g in self.auxiliary[0].gates().items()})
        return {**{k: v.detach() for k, v in out.items()}, "loss": loss}

    def eval_logits(self, images: Tensor) -> Tensor:
        return self.model(images)

    def param_groups(self, weight_decay: float) -> list[dict]:
        """Weights decay; the gate logits (architecture parameters) do not."""
        gates = {
            id(p)
            for aux in self.auxiliary
            if aux.gate_logits is not None
            for p in aux.gate_logits.parameters()
        }
        weights = [p for p in self.parameters() if p.requires_grad and id(p) not in gates]
        groups = [{"params": weights, "weight_decay": weight_decay}]
        arch = [p for p in self.parameters() if id(p) in gates]
        if arch:
            groups.append({"params": arch, "weight_decay": 0.0})
        return groups


def build_auxiliary_task(params: Params, model: SplitNet) -> AuxiliaryTask:
    """The auxiliary task around the compact SplitNet `model` (draws from the global RNG)."""
    t, cfg = params.train, params.method_config
    first = model.members[0]
    member = member_config_of(params)
    auxiliary = build_auxiliary(
        model,
        params.model.variant,
        member["width"],
        member["dropout"],
        cfg,
        num_classes=first.head.fc.out_features,
        in_chans=first.input_size[0],
        image_size=first.input_size[1],
    )
    return AuxiliaryTask(
        model,
        auxiliary,
        cfg,
        t.cot_weight,
        t.cot_warmup_epochs,
        t.mixup_alpha,
        t.label_smoothing,
        t.cot_warmup_per_epoch,
    )


@register_method
class Auxiliary(SplitNetMethod):
    """The SplitNet of `model`/`split`, trained with a wide training-only path per member."""

    name = "auxiliary"
    config = AuxiliaryConfig
    searchable = False
    curve_name = "compact"

    def check(self, params: Params, info: DatasetInfo) -> None:
        with torch.device("meta"):  # always the loop: it reads every member's blocks
            member = member_net(params, info)
        attach = params.method_config.attach
        config_error(lambda: attach_points(len(member.blocks), attach, "auxiliary.attach"))

    def build_task(self, params: Params, model: nn.Module) -> Task:
        if not isinstance(model, SplitNet):
            raise TypeError(f"auxiliary trains a SplitNet, got {type(model).__name__}")
        return build_auxiliary_task(params, model)

    def info(self, params: Params, info: DatasetInfo) -> dict:
        self.check(params, info)
        with torch.device("meta"):
            compact = SplitNet([member_net(params, info) for _ in range(params.split.factor)])
            task = build_auxiliary_task(params, compact)
        return {
            "auxiliary": {
                "compact_params": count_params(compact),
                "training_params": count_params(task),
                "auxiliary_params": count_params(task.auxiliary),
                "attach": params.method_config.attach,
            }
        }

    def run_label(self, params: Params) -> str:
        return f"auxiliary-{super().run_label(params)}"
