"""Evaluation of a trained SplitNet: members, ensemble and every k-of-S prefix, ending in
the uniform accuracy-vs-MACs `curve`; and the latency timer every method's evaluation uses."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from dnc.ensemble.splitnet import SplitNet
from dnc.evaluation.calibration import (
    brier_score,
    expected_calibration_error,
    mutual_information,
    pairwise_disagreement,
    reliability_bins,
)
from dnc.evaluation.flops import cached_cost
from dnc.train.losses import EnsembleHow, ensemble_log_probs
from dnc.train.scoring import collect_logits, score


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


ECE_BINS = 15


def calibration(log_probs: Tensor, labels: Tensor) -> dict[str, float]:
    """ECE (15 equal-width bins) and Brier score of one predictor's (N, C) log-probabilities."""
    p = log_probs.double().exp()
    p = p / p.sum(-1, keepdim=True)  # float32 rounding: exact rows for the checks downstream
    return {
        "ece": expected_calibration_error(p, labels, ECE_BINS),
        "brier": brier_score(p, labels),
    }


def diversity(logits: Tensor) -> dict[str, float]:
    """Pairwise disagreement and mutual information (nats) of S >= 2 members' (S, N, C) logits."""
    p = torch.softmax(logits.double(), dim=-1)
    return {"disagreement": pairwise_disagreement(p), "mutual_info": mutual_information(p)}


def reliability(log_probs: Tensor, labels: Tensor) -> dict[str, list[float]]:
    """The reliability-diagram bins of one predictor, as JSON lists."""
    p = log_probs.double().exp()
    rb = reliability_bins(p / p.sum(-1, keepdim=True), labels, ECE_BINS)
    return {
        "edges": rb.edges.tolist(),
        "count": rb.count.tolist(),
        "confidence": rb.confidence.tolist(),
        "accuracy": rb.accuracy.tolist(),
    }


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
    member_cost = [cached_cost(m, input_shape) for m in model.members]
    per_member = score(logits, labels, how)
    log_p = torch.log_softmax(logits.double(), dim=-1)  # (S, N, C)
    members = [
        {
            "index": i,
            "acc": per_member[f"member_{i}/acc"],
            "nll": per_member[f"member_{i}/nll"],
            **calibration(log_p[i], labels),
            **member_cost[i],
        }
        for i in range(model.split_factor)
    ]
    prefixes, prefix_preds = [], []
    for k in range(1, model.split_factor + 1):
        scores = score(logits[:k], labels, how)
        ens = ensemble_log_probs(logits[:k], how)
        prefix_preds.append(ens.argmax(-1))
        prefixes.append(
            {
                "k": k,
                "acc": scores["ensemble/acc"],
                "nll": scores["ensemble/nll"],
                **calibration(ens, labels),
                **(diversity(logits[:k]) if k > 1 else {}),
                "params": sum(c["params"] for c in member_cost[:k]),
                "macs": sum(c["macs"] for c in member_cost[:k]),
                "latency_ms": {
                    str(b): measure_latency(model, input_shape, b, k, latency_repeats, device)
                    for b in latency_batch_sizes
                },
            }
        )
    by_method = {h: score(logits, labels, h)["ensemble/acc"] for h in ("logits", "softmax", "max")}
    ensemble = {**prefixes[-1], "method": how, "acc_by_method": by_method}
    ensemble["reliability"] = reliability(ensemble_log_probs(logits, how), labels)
    return {
        "ensemble": ensemble,
        "members": members,
        "prefixes": prefixes,
        "curve": curve_rows(prefixes),
        "num_test": int(labels.numel()),
        # Not JSON, popped by dnc.stages.evaluate: the members' (S, N, C) test logits with
        # the labels, and what goes into <run>.predictions.npz.
        "member_logits": (logits, labels),
        "predictions": {
            "labels": labels,
            "ensemble": prefix_preds[-1],
            "members": logits.argmax(-1),
            "prefixes": torch.stack(prefix_preds),
            "num_classes": int(logits.shape[-1]),
        },
    }
