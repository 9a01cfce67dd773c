"""Cooperative learning for cost-adaptive inference (Fang, Bradford, Kim; arXiv 2312.08532).

Two Teammate nets and one wider Leader net are trained at once ("package deal"). Each
Teammate yields sub-networks of several depths that share its weights (`dnc.evaluation.depth`); the
loss distils the Teammate into its sub-networks, the two teams' sub-networks into each
other, and the Leader into the Teammates. At run time the deepest sub-network that fits a
cost budget is deployed. The exact weighting choices are in docs/methods.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dnc.evaluation.depth import (
    FULL,
    DepthStats,
    SubNetwork,
    depth_norms,
    forward_depths,
    resolve_plans,
)
from dnc.evaluation.evaluate import median_latency_ms
from dnc.evaluation.flops import cost
from dnc.models import create_model, get_spec
from dnc.train.losses import EnsembleHow, ensemble_log_probs
from dnc.train.scoring import collect_logits, score

if TYPE_CHECKING:
    from dnc.methods.cooperative import CooperativeConfig

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
    dropout: float | None = 0.0,
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


def _depth_rows(
    net: CooperativeNet,
    members: list[dict],
    device: torch.device,
    latency_batch_sizes: list[int],
    latency_repeats: int,
) -> list[dict]:
    """Per depth: cost, both Teammates' accuracy and Teammate A's latency."""
    shape = net.teammates[0].input_size
    num_depths = len(net.plans)
    rows = []
    for j, name in enumerate(net.plans):
        sub = net.subnetwork(0, name).eval()
        a, b = members[j], members[num_depths + j]
        latency = {
            str(batch): median_latency_ms(
                sub, torch.randn(batch, *shape, device=device), latency_repeats, device
            )
            for batch in latency_batch_sizes
        }
        cost_of = {k: a[k] for k in ("kept", "params", "flops", "macs")}
        rows.append(
            {
                "name": name,
                **cost_of,
                "acc_a": a["acc"],
                "acc_b": b["acc"],
                "acc_mean": (a["acc"] + b["acc"]) / 2,
                "latency_ms": latency,
            }
        )
    return rows


def evaluate_cooperative(
    net: CooperativeNet,
    loader: Iterable[tuple[Tensor, Tensor]],
    device: torch.device,
    latency_batch_sizes: list[int],
    latency_repeats: int,
) -> dict:
    """Accuracy (%), NLL, params and MACs of every Teammate depth and the Leader.

    `members` are `net`'s outputs in order (A's depths, then B's); `depths` pairs the two
    Teammates per depth with Teammate A's latency; `curve` is Teammate A's depths, the
    sub-networks one would deploy; `ensemble` is all Teammate outputs averaged, the
    quantity that selected the best epoch; `deploy` the depth the cost budget chose.
    """
    logits, labels = collect_logits(net.to(device), loader, device, net.forward_all)
    how: EnsembleHow = net.ensemble
    scores = score(logits, labels, how)  # 2 * D Teammate outputs, then the Leader
    costs = {row.pop("name"): row for row in depth_costs(net)}
    members = [
        {
            "index": i,
            "name": name,
            "team": name.split(":")[0],
            "depth": name.split(":")[1],
            **costs[name.split(":")[1]],
            "acc": scores[f"member_{i}/acc"],
            "nll": scores[f"member_{i}/nll"],
        }
        for i, name in enumerate(net.output_names)
    ]
    depths = _depth_rows(net, members, device, latency_batch_sizes, latency_repeats)
    leader_scores = {k: scores[f"member_{len(members)}/{k}"] for k in ("acc", "nll")}
    team = score(logits[:-1], labels, how)
    return {
        "ensemble": {
            "acc": team["ensemble/acc"],
            "nll": team["ensemble/nll"],
            "params": 2 * costs[FULL]["params"],
            "macs": sum(m["macs"] for m in members),
            "method": how,
            "of": "every Teammate depth (the best-epoch selection metric)",
        },
        "members": members,
        "prefixes": [],
        "depths": depths,
        "leader": {**leader_scores, **cost(net.leader, net.teammates[0].input_size)},
        "deploy": next(d for d in depths if d["name"] == net.deploy),
        "curve": [
            {
                "method": "cooperative",
                "label": f"depth {d['name']}",
                "macs": d["macs"],
                "params": d["params"],
                "acc": d["acc_a"],
                "acc_teammates_mean": d["acc_mean"],
            }
            for d in depths
        ],
        "num_test": int(labels.numel()),
        # Not JSON: dnc.stages.evaluate writes it to <run>.predictions.npz (paired tests).
        "predictions": {
            "labels": labels,
            "ensemble": ensemble_log_probs(logits[:-1], how).argmax(-1),
            "members": logits[:-1].argmax(-1),
            "prefixes": ensemble_log_probs(logits[:-1], how).argmax(-1)[None],
            "num_classes": int(logits.shape[-1]),
        },
    }
