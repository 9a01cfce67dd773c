"""Auxiliary over-parameterisation (Liu, Zhuang, Shen, Chen, Yin; arXiv 1909.02214).

A compact network is trained inside a wider one: an auxiliary path - the same architecture
`width_factor` times wider, with its own head - runs beside it and reads the compact
network's block outputs through 1x1 "widening" connections. The compact path never reads
the auxiliary path, so dropping the auxiliary module leaves exactly the compact network;
during training the auxiliary loss reaches the compact blocks through the connections, and
the wider head distils into the compact head. `attach: auto` puts a connection after every
block behind learned gates sigma(stage) * sigma(block), a differentiable stand-in for the
paper's hierarchical search (docs/methods.md).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dnc.config import AuxiliaryConfig
from dnc.depth import stage_of
from dnc.losses import cot_weight_at, distillation_kl, js_divergence, mixed_cross_entropy
from dnc.models import create_model
from dnc.splitnet import SplitNet
from dnc.tasks.base import Task
from dnc.tasks.cotrain import draw_mixup


def block_channels(backbone: nn.Module) -> list[int]:
    """Output channels of every block, from a shape-only (meta-device) forward."""
    ghost = copy.deepcopy(backbone).to("meta")
    h = ghost.stem(torch.zeros(1, *backbone.input_size, device="meta"))
    out = []
    for block in ghost.blocks:
        h = block(h)
        out.append(h.shape[1])
    return out


def attach_points(num_blocks: int, attach: list[int] | str, key: str) -> list[int]:
    """Block indices that get a connection; ValueError naming `key` for a missing block."""
    if isinstance(attach, str):  # all / auto: every block
        return list(range(num_blocks))
    missing = [i for i in attach if i >= num_blocks]
    if missing:
        raise ValueError(
            f"{key}: block {missing[0]} does not exist (blocks are 0..{num_blocks - 1})"
        )
    return list(attach)


def forward_with_features(backbone: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Logits (B, C) and the output of every block."""
    h = backbone.stem(x)
    feats = []
    for block in backbone.blocks:
        h = block(h)
        feats.append(h)
    return backbone.head(h), feats


class AuxiliaryModule(nn.Module):
    """The training-only wide path of one compact network.

    `wide` is the compact architecture built wider; `connections[str(i)]` projects compact
    block i's output onto the wide path's block i output. With `learned_gates` each
    connection is scaled by sigma(stage logit) * sigma(block logit).
    """

    def __init__(
        self, compact: nn.Module, wide: nn.Module, attach: Sequence[int], learned_gates: bool
    ) -> None:
        super().__init__()
        self.wide = wide
        narrow, broad = block_channels(compact), block_channels(wide)
        self.connections = nn.ModuleDict(
            {
                str(i): nn.Sequential(
                    nn.Conv2d(narrow[i], broad[i], 1, bias=False), nn.BatchNorm2d(broad[i])
                )
                for i in attach
            }
        )
        for connection in self.connections.values():
            # Zero-init the BN scale: the wide path starts independent of the compact one
            # and the connections grow from zero, so early wide-head gradients (from a
            # random wide net) do not swamp the compact blocks' own.
            nn.init.zeros_(connection[1].weight)
        self.stage = stage_of(compact.blocks)
        self.gate_logits = (
            nn.ParameterDict(
                {
                    "stage": nn.Parameter(torch.zeros(max(self.stage) + 1)),
                    "block": nn.Parameter(torch.zeros(len(self.stage))),
                }
            )
            if learned_gates
            else None
        )

    def gates(self) -> dict[int, Tensor]:
        """Learned connection weight per attached block ({} without learned gates)."""
        if self.gate_logits is None:
            return {}
        stage = torch.sigmoid(self.gate_logits["stage"])
        block = torch.sigmoid(self.gate_logits["block"])
        return {int(i): stage[self.stage[int(i)]] * block[int(i)] for i in self.connections}

    def forward(self, x: Tensor, compact_feats: Sequence[Tensor]) -> Tensor:
        """Logits (B, C) of the wide path reading the compact block outputs."""
        gates = self.gates()
        h = self.wide.stem(x)
        for i, block in enumerate(self.wide.blocks):
            h = block(h)
            if str(i) in self.connections:
                widened = self.connections[str(i)](compact_feats[i])
                h = h + (gates[i] * widened if gates else widened)
        return self.wide.head(h)


def build_auxiliary(
    model: SplitNet,
    name: str,
    member_width: float,
    member_dropout: float,
    cfg: AuxiliaryConfig,
    *,
    num_classes: int,
    in_chans: int,
    image_size: int,
) -> nn.ModuleList:
    """One auxiliary module per member of `model` (draws from the global RNG)."""
    modules = []
    for member in model.members:
        wide = create_model(
            name,
            num_classes=num_classes,
            in_chans=in_chans,
            image_size=image_size,
            width=member_width * cfg.width_factor,
            dropout=member_dropout,
        )
        attach = attach_points(len(member.blocks), cfg.attach, "auxiliary.attach")
        modules.append(AuxiliaryModule(member, wide, attach, cfg.attach == "auto"))
    return nn.ModuleList(modules)


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
    ) -> None:
        super().__init__()
        self.model = model
        self.auxiliary = auxiliary
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
            weight = cot_weight_at(epoch, self.cot_weight, self.cot_warmup_epochs)
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
