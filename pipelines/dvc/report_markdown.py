"""The comparison report as markdown: the table over configurations, then the verdicts.

Renders what `pipelines.dvc.report_summary` computed (`report.md`); the budget planner's
section (pipelines/search/plan.py) is appended to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.common.format import si
from pipelines.common.machine import platform_line
from pipelines.dvc.report_summary import Run


def plan_section(metrics_dir: Path, params_path: Path, budget_macs: float) -> str:
    """The budget planner fitted to these runs (pipelines/search/plan.py), or why not."""
    import argparse

    from dnc.config import ConfigError
    from pipelines.search.plan_cli import fitted_plan, format_plan, load_runs

    args = argparse.Namespace(runs=str(metrics_dir), target="nll", params=str(params_path))
    args.set = []
    try:
        runs, source = load_runs(args)
        text = format_plan(fitted_plan(args, runs, source, budget_macs), source)
    except ConfigError as err:
        text = f"not fitted: {err}"
    return "## Budget plan (test NLL)\n\n```\n" + text + "\n```\n"


def _opt(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def acc_ci(s: dict[str, Any]) -> str:
    """`83.10 [82.40, 83.80]`: the mean test accuracy with its 95 % CI."""
    ci = s["acc_ci"]
    return f"{s['acc_mean']:.2f} [{'n/a' if ci is None else f'{ci[0]:.2f}, {ci[1]:.2f}'}]"


def markdown(
    summary: dict[str, dict[str, Any]], runs: list[Run], judged: dict[str, Any] | None
) -> str:
    """The comparison table (sorted by MACs), then the verdicts against the baseline."""
    p = runs[0].params
    seeds = sorted({r.seed for r in runs})
    n_test = runs[0].metrics.get("num_test", "?")
    lines = [
        "# Width or number of networks?",
        "",
        f"{p['data']['dataset']}, {p['model']['name']}, {p['train']['epochs']} epochs on "
        f"{p['data']['train_size'] or 'all'} training images, {n_test} test images; "
        f"mean [95 % Student-t CI] over seeds {seeds} (n={len(seeds)}). MACs = multiply-adds "
        "per image summed over members; k=1 = the first member alone. ECE: 15 equal-width "
        "bins; Brier: summed over classes (0-2); disagreement and mutual information (nats): "
        "among the members (S > 1).",
        "",
        f"Computed on {platform_line()} (CPU results repeat on one machine, not across CPU "
        "models).",
        "",
        "| config | S | width (member) | params | MACs | test acc % [95 % CI] "
        "| mean member acc % | k=1 acc % | NLL | ECE | Brier | disagree | MI | latency ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for config, s in sorted(summary.items(), key=lambda kv: (kv[1]["macs"], kv[0])):
        k1 = s["curve"][0]
        latency = ", ".join(f"{v:.2f} ({b})" for b, v in s["latency_ms"].items())
        lines.append(
            f"| {config} | {s['split_factor'] or s['method']} | {s['width']:g} "
            f"({s['member_width']:g}) | {si(s['params'])} | {si(s['macs'])} | "
            f"**{acc_ci(s)}** | {s['member_acc_mean']:.2f} | "
            f"{k1['acc_mean']:.2f} ± {k1['acc_std']:.2f} | {s['nll_mean']:.4f} | "
            f"{_opt(s['ece_mean'], '{:.4f}')} | {_opt(s['brier_mean'], '{:.4f}')} | "
            f"{_opt(s['disagreement_mean'], '{:.3f}')} | {_opt(s['mutual_info_mean'], '{:.4f}')}"
            f" | {latency} |"
        )
    lines += ["", "## Against the baseline", ""]
    if judged is None:
        lines += [
            "No baseline (`compare.baseline`, or an undivided S=1 configuration at the base "
            "width): no verdicts, and no configuration is called better.",
            "",
        ]
        return "\n".join(lines)
    lines += [
        f"Baseline **{judged['baseline']}**. Verdict at alpha = {judged['alpha']:g} from "
        "McNemar's exact test on the per-example test predictions, the discordant counts "
        "pooled over seeds (paired seed k with seed k); the paired difference over seeds and "
        "its t CI are shown beside it: a 'better' whose CI spans 0 rests on this test set, "
        "not on replication across seeds. No correction for the several rows.",
        "",
        judged["table"],
        f"**{judged['headline']}**",
        "",
    ]
    return "\n".join(lines)
