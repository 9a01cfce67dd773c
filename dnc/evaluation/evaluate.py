"""Evaluation of a trained SplitNet: members, ensemble and every k-of-S prefix, ending in
the uniform accuracy-vs-MACs `curve`; and the latency timer every method's evaluation uses."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from dnc.ensemble.splitnet import SplitNet
from dnc.evaluation.flops import cost
from dnc.train.engine import collect_logits, score
from dnc.train.losses import EnsembleHow


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


def curve_rows(
    prefixes: list[dict], method: str = "splitnet", name: str = "splitnet"
) -> list[dict]:
    """The uniform accuracy-vs-cost rows of k-of-S prefixes, labelled `name k=.. of S=..`."""
    s = len(prefixes)
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
