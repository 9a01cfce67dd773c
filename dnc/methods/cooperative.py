"""Cooperative learning for cost-adaptive inference (Fang, Bradford, Kim; arXiv 2312.08532):
its params section, its loss, and the `cooperative` method.

The networks (two Teammates with depth sub-networks, one Leader) are in
`dnc.methods.cooperative_net`; the exact weighting choices are in docs/methods.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product
from typing import Annotated, Any, Literal

import torch
from pydantic import BeforeValidator, Field, field_validator
from torch import Tensor, nn

from dnc.config import ConfigError, Params, Section, block_indices
from dnc.data import DatasetInfo
from dnc.evaluation.depth import DEPTH_RULE, select_depth
from dnc.evaluation.flops import cost, count_params
from dnc.methods.base import Task, config_error, register_method
from dnc.methods.cooperative_net import (
    TEAMS,
    CooperativeNet,
    build_cooperative,
    depth_costs,
    evaluate_cooperative,
)
from dnc.models import member_config
from dnc.train.losses import cot_weight_at, distillation_kl, draw_mixup, mixed_cross_entropy


def _depth_spec(value: Any) -> list[int] | str:
    # Validated per dict value, so an error names `cooperative.depths.<name>`.
    if isinstance(value, str):
        if not DEPTH_RULE.match(value):
            raise ValueError(f"expected kept block indices or 'first:K', got {value!r}")
        return value
    return block_indices(value, "kept block indices (a list) or 'first:K'")


DepthSpec = Annotated[list[int] | str, BeforeValidator(_depth_spec)]


class CooperativeConfig(Section):
    """Cooperative learning for cost-adaptive inference (arXiv 2312.08532)."""

    # Depth name -> the Teammate blocks it keeps (indices into `model.blocks`), or
    # "first:K" = every shape-changing block plus the first K skippable blocks of each stage.
    # The full Teammate is always there too, as depth "full".
    # The defaults suit small_cnn: d1 keeps only the two stride-2 transitions, d2 skips the
    # first residual block.
    depths: dict[str, DepthSpec] = Field(
        default_factory=lambda: {"d1": "first:0", "d2": [1, 2, 3, 4]}, min_length=1
    )
    leader_width: float = Field(2.0, gt=0)  # Leader = model.width x this, trained beside the team
    temperature: float = Field(1.0, gt=0)  # of every distillation term (4 was unstable)
    sub_ce_weight: float = Field(1.0, ge=0)  # label CE on each sub-network (0: KD only)
    sub_weight: float = Field(1.0, ge=0)  # KD Teammate -> its own sub-networks
    peer_weight: float = Field(0.1, ge=0)  # KD subs <-> each other (1.0 collapsed short runs)
    leader_weight: float = Field(1.0, ge=0)  # KD Leader -> the two full Teammates
    # Every KD weight ramps up linearly over this many epochs: untrained peers distilling
    # into each other from step 0 collapsed the Teammates to constant outputs.
    kd_warmup_epochs: float = Field(1.0, ge=0)
    # same_depth: A's depth d <-> B's depth d (full <-> full included); all: every A network
    # <-> every B network (each network's peer pulls are averaged).
    peers: Literal["same_depth", "all"] = "same_depth"
    # shared: one augmented view for all three nets; per_net: Teammate A, B and the Leader
    # each get their own view (a Teammate's sub-networks always see their Teammate's view).
    views: Literal["shared", "per_net"] = "shared"
    # per_depth: each sub-network keeps its own BatchNorm running statistics (weights stay
    # shared); shared: one set of statistics averaged over all depths.
    bn_stats: Literal["per_depth", "shared"] = "per_depth"
    # Deploy the deepest sub-network whose MACs fit; null = no budget. Checked at stage start.
    budget_macs: int | None = Field(None, ge=1)

    @field_validator("depths")
    @classmethod
    def _check_names(cls, depths: dict[str, Any]) -> dict[str, Any]:
        for name in depths:
            if name == "full" or not name.isidentifier():
                raise ValueError(f"depth name {name!r}: use an identifier other than 'full'")
        return depths


def peer_pairs(num_depths: int, peers: str) -> list[tuple[int, int]]:
    """(A depth, B depth) index pairs that distil into each other."""
    if peers == "same_depth":
        return [(d, d) for d in range(num_depths)]
    return list(product(range(num_depths), repeat=2))


class CooperativeTask(Task):
    """Loss = CE(A, B, Leader) + sub_ce * CE(sub-networks) + sub * KD(Teammate -> subs)
    + peer * KD(A's nets <-> B's nets) + leader * KD(Leader -> A, B).

    Every term is summed over its networks or (teacher, student) pairs, as SplitNet sums
    its members' cross-entropies; a peer pair counts both directions, and with `peers: all`
    the peer term is divided by the number of peers each network has.
    """

    def __init__(
        self,
        model: CooperativeNet,
        cfg: CooperativeConfig,
        mixup_alpha: float = 0.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.num_views = 3 if cfg.views == "per_net" else 1
        self.mixup_alpha = mixup_alpha
        self.label_smoothing = label_smoothing

    def training_step(self, views: Tensor, targets: Tensor, epoch: float) -> dict[str, Tensor]:
        views, mix = draw_mixup(views, targets, self.mixup_alpha)
        last = views.shape[0] - 1  # shared view: every net reads views[0]
        teams = [self.model.team_logits(t, views[min(t, last)]) for t in range(len(TEAMS))]
        leader = self.model.leader(views[min(2, last)])
        t, cfg = self.cfg.temperature, self.cfg

        def ce(z: Tensor) -> Tensor:
            return mixed_cross_entropy(z, targets, mix, self.label_smoothing)

        zero = leader.new_zeros(())
        ce_full = sum((ce(team[-1]) for team in teams), ce(leader))
        ce_sub = sum((ce(z) for team in teams for z in team[:-1]), zero)
        kd_sub = sum((distillation_kl(z, team[-1], t) for team in teams for z in team[:-1]), zero)
        pairs = peer_pairs(len(teams[0]), cfg.peers)
        # Normalised so each network's peer pulls add up to weight 1 (1 peer with same_depth).
        per_network = len(pairs) / len(teams[0])
        kd_peer = (
            sum(
                (
                    distillation_kl(teams[0][a], teams[1][b], t)
                    + distillation_kl(teams[1][b], teams[0][a], t)
                    for a, b in pairs
                ),
                zero,
            )
            / per_network
        )
        kd_leader = sum((distillation_kl(team[-1], leader, t) for team in teams), zero)
        ramp = cot_weight_at(epoch, 1.0, cfg.kd_warmup_epochs)
        loss = (
            ce_full
            + cfg.sub_ce_weight * ce_sub
            + ramp * cfg.sub_weight * kd_sub
            + ramp * cfg.peer_weight * kd_peer
            + ramp * cfg.leader_weight * kd_leader
        )
        parts = {
            "ce": ce_full,
            "ce_sub": ce_sub,
            "kd_sub": kd_sub,
            "kd_peer": kd_peer,
            "kd_leader": kd_leader,
            "kd_ramp": torch.tensor(ramp),
        }
        return {**{k: v.detach() for k, v in parts.items()}, "loss": loss}

    def eval_logits(self, images: Tensor) -> Tensor:
        return self.model(images)


def build_cooperative_model(params: Params, info: DatasetInfo) -> CooperativeNet:
    """The CooperativeNet of `params` (seeded), deploying the depth that fits the budget."""
    cfg: CooperativeConfig = params.method_config
    torch.manual_seed(params.seed)
    net = config_error(
        lambda: build_cooperative(
            params.model.variant,
            cfg,
            num_classes=info.num_classes,
            in_chans=info.in_chans,
            image_size=info.image_size,
            width=params.model.width,
            dropout=params.model.dropout,
            ensemble=params.split.ensemble,
        )
    )
    if cfg.budget_macs is not None:
        net.deploy = deploy_depth(net, cfg.budget_macs)["name"]
    return net


def deploy_depth(net: CooperativeNet, budget_macs: int) -> dict:
    """The deepest depth within `budget_macs`; ConfigError when none is."""
    try:
        return dict(select_depth(depth_costs(net), budget_macs, "macs"))
    except ValueError as err:
        raise ConfigError(f"cooperative.budget_macs: {err}") from None


@register_method
class Cooperative:
    """Two undivided Teammates with depth sub-networks and a wider Leader; `split.*` does
    not apply except `split.ensemble` (best-epoch selection)."""

    name = "cooperative"
    config = CooperativeConfig
    searchable = False

    def check(self, params: Params, info: DatasetInfo) -> None:
        with torch.device("meta"):  # no weights, milliseconds
            self.build_model(params, info)

    def build_model(self, params: Params, info: DatasetInfo) -> nn.Module:
        return build_cooperative_model(params, info)

    def build_task(self, params: Params, model: nn.Module) -> Task:
        t = params.train
        return CooperativeTask(model, params.method_config, t.mixup_alpha, t.label_smoothing)

    def weight_decay(self, params: Params) -> float:
        return params.train.weight_decay  # the Teammates are not divided, nor their decay

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
        metrics = evaluate_cooperative(
            model, loader, device, e.latency_batch_sizes, e.latency_repeats
        )
        widths = member_config(params.model.variant, params.model.width, params.model.dropout, 1)
        leader = {"leader_width": params.method_config.leader_width}
        metrics["config"] = {"split_factor": None, **widths, **leader}
        return metrics

    def cascade_stages(self, model: nn.Module) -> tuple[list[tuple[str, nn.Module]], str]:
        """Teammate A's depths, shallowest first; a deeper depth supersedes (`last`)."""
        return [(name, model.subnetwork(0, name)) for name in model.plans], "last"

    def info(self, params: Params, info: DatasetInfo) -> dict:
        with torch.device("meta"):
            net = self.build_model(params, info)
            depths = depth_costs(net)
            leader = cost(net.leader, net.teammates[0].input_size)
        return {
            "cooperative": {
                "depths": depths,
                "leader": leader,
                "deploy": net.deploy,
                "budget_macs": params.method_config.budget_macs,
                "training_params": count_params(net),
            }
        }

    def run_label(self, params: Params) -> str:
        return f"cooperative-{params.model.variant}-{params.data.dataset}"  # not divided
