"""Cooperative learning for cost-adaptive inference (Fang, Bradford, Kim; arXiv 2312.08532).

Two Teammate nets and one wider Leader net are trained at once ("package deal"). Each
Teammate yields sub-networks of several depths that share its weights (`dnc.depth`); the
loss distils the Teammate into its sub-networks, the two teams' sub-networks into each
other, and the Leader into the Teammates. At run time the deepest sub-network that fits a
cost budget is deployed. The exact weighting choices are in docs/methods.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import product

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dnc.config import CooperativeConfig
from dnc.depth import (
    FULL,
    DepthStats,
    SubNetwork,
    depth_norms,
    forward_depths,
    resolve_plans,
)
from dnc.flops import cost
from dnc.losses import EnsembleHow, cot_weight_at, distillation_kl, mixed_cross_entropy
from dnc.models import create_model, get_spec
from dnc.tasks.base import Task
from dnc.tasks.cotrain import draw_mixup

TEAMS = ("A", "B")


class CooperativeNet(nn.Module):
    """Teammates A and B (same architecture, independent init) and the Leader.

    `plans` maps depth name -> kept block indices, shallow to deep, `full` last. `forward`
    returns the logits of every Teammate depth, A's then B's: (2 * D, B, C).
    """

    def __init__(
        self,
        teammates: Sequence[nn.Module],
        leader: nn.Module,
        plans: Mapping[str, Sequence[int]],
        ensemble: EnsembleHow = "logits",
        bn_stats: str = "per_depth",
    ) -> None:
        super().__init__()
        if len(teammates) != len(TEAMS):
            raise ValueError(f"cooperative learning has two Teammates, got {len(teammates)}")
        if list(plans)[-1] != FULL:
            raise ValueError("the last depth plan must be the full network")
        self.teammates = nn.ModuleList(teammates)
        self.leader = leader
        self.plans = {name: tuple(kept) for name, kept in plans.items()}
        self.ensemble = ensemble
        self.deploy = FULL  # the depth `predict` serves (set from a cost budget)
        # Private BatchNorm statistics per (Teammate, depth); `full` keeps the layers' own.
        self.depth_stats = nn.ModuleDict(
            {
                f"{team}_{name}": DepthStats(depth_norms(mate, kept))
                for team, mate in zip(TEAMS, teammates, strict=True)
                for name, kept in self.plans.items()
                if name != FULL and bn_stats == "per_depth"
            }
        )

    @property
    def output_names(self) -> list[str]:
        """Names of `forward`'s outputs in order, e.g. `A:d1`, ..., `B:full`."""
        return [f"{team}:{depth}" for team in TEAMS for depth in self.plans]

    def _stats(self, team: int) -> dict[str, DepthStats]:
        prefix = f"{TEAMS[team]}_"
        return {k[len(prefix) :]: v for k, v in self.depth_stats.items() if k.startswith(prefix)}

    def subnetwork(self, team: int, depth: str) -> SubNetwork:
        """Teammate `team`'s depth `depth` as a module sharing the Teammate's weights."""
        stats = self._stats(team).get(depth)
        return SubNetwork(self.teammates[team], self.plans[depth], stats)

    def team_logits(self, team: int, x: Tensor) -> list[Tensor]:
        """Logits (B, C) of each depth of Teammate `team`, shallow to full."""
        return forward_depths(self.teammates[team], x, self.plans, self._stats(team))

    def forward(self, x: Tensor) -> Tensor:
        """Logits of every Teammate depth (2 * D, B, C) for images (B, C, H, W)."""
        return torch.stack([z for t in range(len(TEAMS)) for z in self.team_logits(t, x)])

    def forward_all(self, x: Tensor) -> Tensor:
        """`forward`'s outputs with the Leader's logits last: (2 * D + 1, B, C)."""
        return torch.cat([self(x), self.leader(x).unsqueeze(0)])

    def predict(self, x: Tensor) -> Tensor:
        """Log-probabilities (B, C) of Teammate A at the deployed depth, the served model."""
        return F.log_softmax(self.subnetwork(0, self.deploy)(x).float(), dim=-1)


def build_cooperative(
    name: str,
    cfg: CooperativeConfig,
    *,
    num_classes: int,
    in_chans: int,
    image_size: int,
    width: float | None = None,
    dropout: float = 0.0,
    ensemble: EnsembleHow = "logits",
) -> CooperativeNet:
    """Two Teammates of model `name` at `width` and a Leader `cfg.leader_width` times wider.

    Built A, B, Leader in turn from the global RNG (seed it first). Raises ValueError
    naming `cooperative.depths.<name>` for a depth the architecture does not have.
    """
    base = get_spec(name).default_width if width is None else width
    dims = {"num_classes": num_classes, "in_chans": in_chans, "image_size": image_size}
    teammates = [create_model(name, width=base, dropout=dropout, **dims) for _ in TEAMS]
    leader = create_model(name, width=base * cfg.leader_width, dropout=dropout, **dims)
    plans = resolve_plans(teammates[0].blocks, cfg.depths, "cooperative.depths")
    return CooperativeNet(teammates, leader, plans, ensemble, cfg.bn_stats)


def depth_costs(net: CooperativeNet) -> list[dict]:
    """Kept blocks, params and MACs of every Teammate depth (the Teammates are alike)."""
    shape = net.teammates[0].input_size
    return [
        {"name": name, "kept": list(kept), **cost(net.subnetwork(0, name), shape)}
        for name, kept in net.plans.items()
    ]


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
