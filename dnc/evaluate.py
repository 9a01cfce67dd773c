"""Evaluation of a trained SplitNet: members, ensemble and every k-of-S prefix."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable

import torch
from torch import Tensor

from dnc.engine import collect_logits, score
from dnc.flops import cost
from dnc.losses import EnsembleHow
from dnc.splitnet import SplitNet


@torch.no_grad()
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
    times = []
    for i in range(repeats + 2):  # two warm-up calls
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        model.predict(x, k)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= 2:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


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
        "num_test": int(labels.numel()),
    }
