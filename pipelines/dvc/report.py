"""`python -m pipelines report`: every configuration of the comparison side by side.

The DVC `report` stage. Reads the `compare` section of params.yaml, each run's metrics JSON
(`reports/evaluate/<config>-seed<k>.json`) and training history (`models/<run>/history.json`)
and writes into `--out` (`reports/`), each file atomically:
- `report.md`: the table, mean ± std over seeds;
- `report/summary.json`: the same numbers as DVC metrics (`dvc metrics show/diff`);
- `report/plots/accuracy_vs_macs.png`: every configuration's k-of-S prefix curve plus the
  S=1 width curve, i.e. width against number of networks; `report/plots/learning_curves.png`
  (validation accuracy per member and ensemble) and `report/plots/train_loss.png`;
- `report/curves/<config>.json`: mean learning curves as DVC data plots.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnc.config import ConfigError
from dnc.io import write_text
from pipelines.common.format import si
from pipelines.common.machine import platform_line
from pipelines.dvc.matrix import Comparison, load_comparison, run_name


@dataclass(frozen=True)
class Run:
    """One trained and evaluated (configuration, seed)."""

    config: str
    seed: int
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    params: dict[str, Any]  # what training actually used (models/<run>/params.json)


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
        name = run_name(config, seed)
        metrics = _read_json(Path(metrics_dir) / f"{name}.json", "metrics")
        history = _read_json(Path(models_dir) / name / "history.json", "training history")
        params = _read_json(Path(models_dir) / name / "params.json", "training params")
        runs.append(Run(config, seed, metrics, history, params))
    return runs


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


def plan_section(metrics_dir: Path, params_path: Path, budget_macs: float) -> str:
    """The budget planner fitted to these runs (pipelines/search/plan.py), or why not."""
    import argparse

    from dnc.config import ConfigError
    from pipelines.search.plan import plan
    from pipelines.search.plan_cli import format_plan, load_runs, make_candidates

    args = argparse.Namespace(runs=str(metrics_dir), target="nll", params=str(params_path))
    args.set = []
    try:
        runs, source = load_runs(args)
        text = format_plan(plan(runs, make_candidates(args), budget_macs, source), source)
    except ConfigError as err:
        text = f"not fitted: {err}"
    return "## Budget plan (test NLL)\n\n```\n" + text + "\n```\n"


def label(config: str, s: dict[str, Any]) -> str:
    """`s4: S=4 x w16 (of 32)` - configuration name, members and their width."""
    shape = f"S={s['split_factor']}" if s["split_factor"] else s["method"]
    return f"{config}: {shape} x w{s['member_width']:g} (of {s['width']:g})"


def markdown(summary: dict[str, dict[str, Any]], runs: list[Run]) -> str:
    """The comparison table (sorted by MACs) with a line saying what was run."""
    p = runs[0].params
    seeds = sorted({r.seed for r in runs})
    n_test = runs[0].metrics.get("num_test", "?")
    lines = [
        "# Width or number of networks?",
        "",
        f"{p['data']['dataset']}, {p['model']['name']}, {p['train']['epochs']} epochs on "
        f"{p['data']['train_size'] or 'all'} training images, {n_test} test images; "
        f"mean ± sample std over seeds {seeds} (n={len(seeds)}). MACs = multiply-adds per "
        "image summed over members; k=1 = the first member alone.",
        "",
        f"Computed on {platform_line()} (CPU results repeat on one machine, not across CPU "
        "models).",
        "",
        "| config | S | width (member) | params | MACs | test acc % | mean member acc % "
        "| k=1 acc % | NLL | latency ms (batch) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for config, s in sorted(summary.items(), key=lambda kv: (kv[1]["macs"], kv[0])):
        k1 = s["curve"][0]
        latency = ", ".join(f"{v:.2f} ({b})" for b, v in s["latency_ms"].items())
        lines.append(
            f"| {config} | {s['split_factor'] or s['method']} | {s['width']:g} "
            f"({s['member_width']:g}) | {si(s['params'])} | {si(s['macs'])} | "
            f"**{s['acc_mean']:.2f} ± {s['acc_std']:.2f}** | {s['member_acc_mean']:.2f} | "
            f"{k1['acc_mean']:.2f} ± {k1['acc_std']:.2f} | {s['nll_mean']:.4f} | {latency} |"
        )
    best = max(summary, key=lambda c: summary[c]["acc_mean"])
    lines += ["", f"Best test accuracy: **{label(best, summary[best])}**.", ""]
    return "\n".join(lines)


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


def _mean_curve(runs: list[Run], key: str) -> tuple[list[float], list[float], list[float]]:
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
        series = {"ensemble": _mean_curve(mine, "val/ensemble/acc")}
        members = [k for k in keys if k.endswith("/acc")]
        for key in members if len(members) > 1 else []:  # S=1: the member is the ensemble
            xs, ys, _ = _mean_curve(mine, key)
            series[key.split("/")[1].replace("_", " ")] = (xs, ys, None)
        panels[config] = series
    return panels


def report(params_path: Path, metrics_dir: Path, models_dir: Path, out_dir: Path) -> dict:
    """Read every run, write the table, summary, plots and curves; returns the summary."""
    comparison = load_comparison(params_path)
    runs = load_runs(comparison, metrics_dir, models_dir)  # all inputs checked before work
    from pipelines.dvc import plots  # imports matplotlib: after the inputs are known good

    summary = summarise(comparison, runs)
    table, out_dir = Path(out_dir) / "report.md", Path(out_dir) / "report"
    dataset = runs[0].params["data"]["dataset"]
    plots.accuracy_vs_macs(
        macs_rows(summary),
        out_dir / "plots" / "accuracy_vs_macs.png",
        f"{dataset}: width vs number of networks (mean ± std, n={len(comparison.seeds)} seeds)",
    )
    panels = learning_curves(comparison, runs)
    plots.line_panels(
        {label(c, summary[c]): series for c, series in panels.items()},
        out_dir / "plots" / "learning_curves.png",
        f"{dataset}: validation accuracy per member and ensemble",
        "epoch",
        "val accuracy (%)",
        emphasise="ensemble",
    )
    loss = {c: _mean_curve([r for r in runs if r.config == c], "train/loss") for c in panels}
    plots.line_panels(
        {"training loss (CE summed over members + co-training term)": loss},
        out_dir / "plots" / "train_loss.png", dataset, "epoch", "loss",
    )  # fmt: skip
    for config, series in panels.items():
        xs, ys, std = series["ensemble"]
        rows = [{"epoch": x, "val_ensemble_acc": y, "val_ensemble_acc_std": s}
                for x, y, s in zip(xs, ys, std, strict=True)]  # fmt: skip
        write_text(json.dumps(rows, indent=1) + "\n", out_dir / "curves" / f"{config}.json")
    write_text(json.dumps(summary, indent=2) + "\n", out_dir / "summary.json")
    budget = max(s["macs"] for s in summary.values())
    write_text(
        markdown(summary, runs) + "\n" + plan_section(metrics_dir, params_path, budget), table
    )
    return summary


def _run(args: argparse.Namespace) -> int:
    summary = report(Path(args.params), Path(args.metrics), Path(args.models), Path(args.out))
    for config, s in summary.items():
        print(f"{label(config, s):40s} {s['acc_mean']:6.2f} ± {s['acc_std']:.2f} %")
    print(f"wrote {Path(args.out) / 'report.md'}")
    return 0


def add(p: argparse.ArgumentParser) -> None:
    """`python -m pipelines report`."""
    p.add_argument("--params", default="params.yaml", help="params file with a compare section")
    p.add_argument("--metrics", default="reports/evaluate", help="folder of metrics JSON")
    p.add_argument("--models", default="models", help="folder of run dirs (history.json)")
    p.add_argument("--out", default="reports", help="writes OUT/report.md and OUT/report/")
    p.set_defaults(func=_run)
