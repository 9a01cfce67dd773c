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
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from dnc.ensemble.splitnet import SplitNet
from dnc.evaluation.depth import stage_of
from dnc.models import create_model

if TYPE_CHECKING:
    from dnc.methods.auxiliary import AuxiliaryConfig


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
