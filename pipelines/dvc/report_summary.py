"""The numbers of the comparison report: every run read back, then per configuration.

`load_runs` reads each (configuration, seed)'s metrics JSON, per-example predictions,
history and params; `summarise` gives each configuration's shape, cost and test metrics
over seeds; `judge` sets every configuration against the baseline (pipelines.common.verdicts);
the curves and bins here are the data of the report's plots (`pipelines.dvc.plots`).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dnc.config import ConfigError
from dnc.evaluation.predictions import predictions_path, read_predictions
from pipelines.common import verdicts
from pipelines.common.stats import mean_ci
from pipelines.dvc.matrix import Comparison, metrics_path, model_dir


@dataclass(frozen=True)
class Run:
    """One trained and evaluated (configuration, seed)."""

    config: str
    seed: int
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    params: dict[str, Any]  # what training actually used (models/<run>/params.json)
    correct: np.ndarray  # (N,) bool: the ensemble's per-example test correctness


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found (run `dvc repro` first)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise ConfigError(f"{path}: not valid JSON") from None


def load_runs(comparison: Comparison, metrics_dir: Path, models_dir: Path) -> list[Run]:
    """Every run of the comparison; the first missing or broken file raises."""
    runs = []
    for config, seed in comparison.runs():
        path = metrics_path(metrics_dir, config, seed)
        run_dir = model_dir(models_dir, config, seed)
        metrics = _read_json(path, "metrics")
        history = _read_json(run_dir / "history.json", "training history")
        params = _read_json(run_dir / "params.json", "training params")
        correct = read_predictions(predictions_path(path)).correct()
        runs.append(Run(config, seed, metrics, history, params, correct))
    return runs


def _mean_of(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.fmean(values) if values else None


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def undivided_width(params: dict[str, Any]) -> float:
    """`model.width`, or the variant's own width when it is null."""
    if params["model"]["width"] is not None:
        return float(params["model"]["width"])
    from dnc.models import get_spec  # imports torch: only when needed

    return float(get_spec(params["model"]["name"]).default_width)


def summarise(comparison: Comparison, runs: list[Run]) -> dict[str, dict[str, Any]]:
    """Per configuration: its shape, cost and mean ± std of the test metrics over seeds."""
    out: dict[str, dict[str, Any]] = {}
    for config in comparison.configs:
        mine = [r for r in runs if r.config == config]
        first = mine[0].metrics
        acc = mean_std([r.metrics["ensemble"]["acc"] for r in mine])
        ci = mean_ci([r.metrics["ensemble"]["acc"] for r in mine])
        ensembles = [r.metrics["ensemble"] for r in mine]
        members = [statistics.fmean(m["acc"] for m in r.metrics["members"]) for r in mine]
        curve = []
        for i, row in enumerate(first["curve"]):  # k-of-S prefixes (or depths): mean over seeds
            m, sd = mean_std([r.metrics["curve"][i]["acc"] for r in mine])
            curve.append(
                {**{k: v for k, v in row.items() if k != "acc"}, "acc_mean": m, "acc_std": sd}
            )
        latency = first["ensemble"].get("latency_ms", {})
        out[config] = {
            "method": first["config"]["method"],
            "split_factor": first["config"]["split_factor"],
            "width": undivided_width(mine[0].params),
            "member_width": first["config"]["width"],
            "params": first["ensemble"]["params"],
            "macs": first["ensemble"]["macs"],
            "acc_mean": acc[0],
            "acc_std": acc[1],
            "acc_ci": None if ci.low is None else [ci.low, ci.high],
            **{
                f"{k}_mean": _mean_of(ensembles, k)
                for k in ("ece", "brier", "disagreement", "mutual_info")
            },  # fmt: skip
            "member_acc_mean": statistics.fmean(members),
            "nll_mean": statistics.fmean(r.metrics["ensemble"]["nll"] for r in mine),
            "seeds": [r.seed for r in mine],
            "best_epochs": [r.metrics["selection"]["best_epoch"] for r in mine],
            "latency_ms": {
                b: statistics.median(r.metrics["ensemble"]["latency_ms"][b] for r in mine)
                for b in latency
            },
            "curve": curve,
            "cascade": mean_cascade(mine),
        }
    return out


def mean_cascade(runs: list[Run]) -> list[dict[str, float]]:
    """The cascade's (tau, mean MACs, accuracy) averaged over seeds ([] when not measured)."""
    if not all(r.metrics.get("cascade") for r in runs):
        return []
    points = zip(*(r.metrics["cascade"]["points"] for r in runs), strict=True)
    return [
        {"tau": ps[0]["tau"], "macs": statistics.fmean(p["macs"] for p in ps),
         "acc_mean": statistics.fmean(p["acc"] for p in ps)}
        for ps in points
    ]  # fmt: skip


def label(config: str, s: dict[str, Any]) -> str:
    """`s4: S=4 x w16 (of 32)` - configuration name, members and their width."""
    shape = f"S={s['split_factor']}" if s["split_factor"] else s["method"]
    return f"{config}: {shape} x w{s['member_width']:g} (of {s['width']:g})"


def judge(comparison: Comparison, runs: list[Run]) -> dict[str, Any] | None:
    """Every configuration against `comparison.baseline` (None without one)."""
    if comparison.baseline is None:
        return None
    correct = {c: {r.seed: r.correct for r in runs if r.config == c} for c in comparison.configs}
    rows = verdicts.verdicts(correct, comparison.baseline)
    return {
        **verdicts.summary(rows, comparison.baseline),
        "table": verdicts.table(rows, comparison.baseline),
    }


def reliability_bins(comparison: Comparison, runs: list[Run]) -> dict[str, dict[str, Any]]:
    """Per configuration: its ensemble's reliability bins, counts and sums over seeds."""
    out = {}
    for config in comparison.configs:
        rel = [r.metrics["ensemble"].get("reliability") for r in runs if r.config == config]
        if not rel or any(b is None for b in rel):
            continue
        count = np.sum([b["count"] for b in rel], axis=0)
        safe = np.maximum(count, 1)
        conf = np.sum([np.multiply(b["confidence"], b["count"]) for b in rel], axis=0) / safe
        acc = np.sum([np.multiply(b["accuracy"], b["count"]) for b in rel], axis=0) / safe
        out[config] = {"edges": rel[0]["edges"], "count": count.tolist(),
                       "confidence": conf.tolist(), "accuracy": acc.tolist()}  # fmt: skip
    return out


def macs_rows(summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for `plots.accuracy_vs_macs`: S=1 configurations form one width curve; each
    S>1 configuration its own k-of-S prefix curve."""
    rows = []
    for config, s in summary.items():
        if s["split_factor"] == 1:
            rows.append({"label": f"w{s['width']:g}", "macs": s["macs"], "acc": s["acc_mean"],
                         "acc_std": s["acc_std"], "curve": "S=1, width varies"})  # fmt: skip
            continue
        for k, row in enumerate(s["curve"], start=1):
            rows.append({"label": f"k={k}", "macs": row["macs"], "acc": row["acc_mean"],
                         "acc_std": row["acc_std"], "curve": label(config, s)})  # fmt: skip
        for p in s.get("cascade", [])[1:-1]:  # the ends are k=1 and k=S, plotted already
            rows.append({"label": f"τ={p['tau']:g}", "macs": p["macs"], "acc": p["acc_mean"],
                         "curve": f"{config}: cascade", "annotate": False})  # fmt: skip
    return rows


def mean_curve(runs: list[Run], key: str) -> tuple[list[float], list[float], list[float]]:
    """Per epoch (1-based): the mean and std of history `key` over the runs."""
    epochs = min(len(r.history) for r in runs)
    xs = [r + 1.0 for r in range(epochs)]
    stats = [mean_std([r.history[e][key] for r in runs]) for e in range(epochs)]
    return xs, [m for m, _ in stats], [s for _, s in stats]


def learning_curves(comparison: Comparison, runs: list[Run]) -> dict[str, dict[str, Any]]:
    """Per configuration: mean (± std) validation accuracy per member and of the ensemble."""
    panels: dict[str, dict[str, Any]] = {}
    for config in comparison.configs:
        mine = [r for r in runs if r.config == config]
        keys = sorted(k for k in mine[0].history[0] if k.startswith("val/member_"))
        series = {"ensemble": mean_curve(mine, "val/ensemble/acc")}
        members = [k for k in keys if k.endswith("/acc")]
        for key in members if len(members) > 1 else []:  # S=1: the member is the ensemble
            xs, ys, _ = mean_curve(mine, key)
            series[key.split("/")[1].replace("_", " ")] = (xs, ys, None)
        panels[config] = series
    return panels
