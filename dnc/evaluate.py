"""Evaluation of a trained model: SplitNet members, ensemble and every k-of-S prefix;
cooperative Teammate depths. Both end in a uniform accuracy-vs-MACs `curve`."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from dnc.depth import FULL
from dnc.engine import collect_logits, score
from dnc.flops import cost
from dnc.losses import EnsembleHow
from dnc.splitnet import SplitNet
from dnc.tasks.cooperative import CooperativeNet, depth_costs


@torch.no_grad()
def median_latency_ms(
    fn: Callable[[Tensor], object], x: Tensor, repeats: int, device: torch.device
) -> float:
    """Median wall-clock milliseconds of `fn(x)` over `repeats` calls after two warm-ups."""
    times = []
    for i in range(repeats + 2):  # two warm-up calls
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= 2:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def measure_latency(
    model: SplitNet,
    input_shape: tuple[int, ...],
    batch: int,
    k: int,
    repeats: int,
    device: torch.device,
) -> float:
    """Median wall-clock milliseconds of a k-member ensemble forward at `batch`."""
    model.eval().to(device)
    x = torch.randn(batch, *input_shape, device=device)
    return median_latency_ms(lambda images: model.predict(images, k), x, repeats, device)


def curve_rows(prefixes: list[dict], method: str = "splitnet") -> list[dict]:
    """The uniform accuracy-vs-cost rows of k-of-S prefixes (`compact` for auxiliary)."""
    s = len(prefixes)
    name = "compact" if method == "auxiliary" else "splitnet"
    return [
        {
            "method": method,
            "label": name if s == 1 else f"{name} k={p['k']} of S={s}",
            "macs": p["macs"],
            "params": p["params"],
            "acc": p["acc"],
        }
        for p in prefixes
    ]


def evaluate_splitnet(
    model: SplitNet,
    loader: Iterable[tuple[Tensor, Tensor]],
    input_shape: tuple[int, ...],
    device: torch.device,
    latency_batch_sizes: list[int],
    latency_repeats: int,
) -> dict:
    """Accuracy (%), NLL, params, MACs and latency of members, ensemble and k-prefixes."""
    logits, labels = collect_logits(model.to(device), loader, device)
    how: EnsembleHow = model.ensemble
    member_cost = [cost(m, input_shape) for m in model.members]
    per_member = score(logits, labels, how)
    members = [
        {
            "index": i,
            "acc": per_member[f"member_{i}/acc"],
            "nll": per_member[f"member_{i}/nll"],
            **member_cost[i],
        }
        for i in range(model.split_factor)
    ]
    prefixes = []
    for k in range(1, model.split_factor + 1):
        scores = score(logits[:k], labels, how)
        prefixes.append(
            {
                "k": k,
                "acc": scores["ensemble/acc"],
                "nll": scores["ensemble/nll"],
                "params": sum(c["params"] for c in member_cost[:k]),
                "macs": sum(c["macs"] for c in member_cost[:k]),
                "latency_ms": {
                    str(b): measure_latency(model, input_shape, b, k, latency_repeats, device)
                    for b in latency_batch_sizes
                },
            }
        )
    by_method = {h: score(logits, labels, h)["ensemble/acc"] for h in ("logits", "softmax", "max")}
    return {
        "ensemble": {**prefixes[-1], "method": how, "acc_by_method": by_method},
        "members": members,
        "prefixes": prefixes,
        "curve": curve_rows(prefixes),
        "num_test": int(labels.numel()),
    }


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
    }
