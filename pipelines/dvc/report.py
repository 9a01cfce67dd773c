"""`python -m pipelines report`: every configuration of the comparison side by side.

The DVC `report` stage. Reads the `compare` section of params.yaml, each run's metrics JSON
and per-example predictions (`reports/evaluate/<config>/seed<k>.json`, `.predictions.npz`)
and training history (`models/<config>/seed<k>/history.json`) and writes into `--out`
(`reports/`), each file atomically:
- `report.md`: the table (mean with its 95 % t CI over seeds, calibration and diversity),
  then every configuration against `compare.baseline` with its verdict
  (pipelines.common.verdicts) and a headline that names a winner only when the test does;
- `report/summary.json`: the same numbers as DVC metrics (`dvc metrics show/diff`);
- `report/plots/accuracy_vs_macs.png`: every configuration's k-of-S prefix curve plus the
  S=1 width curve, i.e. width against number of networks; `report/plots/learning_curves.png`
  (validation accuracy per member and ensemble), `report/plots/train_loss.png` and
  `report/plots/reliability.png` (the ensemble's reliability diagram per configuration);
- `report/curves/<config>.json`: mean learning curves as DVC data plots.

The numbers come from `pipelines.dvc.report_summary`, the markdown from
`pipelines.dvc.report_markdown`; this module writes the files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dnc.io import write_text
from pipelines.dvc.matrix import load_comparison
from pipelines.dvc.report_markdown import acc_ci, markdown, plan_section
from pipelines.dvc.report_summary import (
    judge,
    label,
    learning_curves,
    load_runs,
    macs_rows,
    mean_curve,
    reliability_bins,
    summarise,
)


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
    loss = {c: mean_curve([r for r in runs if r.config == c], "train/loss") for c in panels}
    plots.line_panels(
        {"training loss (CE summed over members + co-training term)": loss},
        out_dir / "plots" / "train_loss.png", dataset, "epoch", "loss",
    )  # fmt: skip
    for config, series in panels.items():
        xs, ys, std = series["ensemble"]
        rows = [{"epoch": x, "val_ensemble_acc": y, "val_ensemble_acc_std": s}
                for x, y, s in zip(xs, ys, std, strict=True)]  # fmt: skip
        write_text(json.dumps(rows, indent=1) + "\n", out_dir / "curves" / f"{config}.json")
    bins = reliability_bins(comparison, runs)
    if bins:
        plots.reliability_diagram(
            bins, out_dir / "plots" / "reliability.png",
            f"{dataset}: reliability of the ensemble (test, all seeds)",
        )  # fmt: skip
    judged = judge(comparison, runs)
    verdict_json = {k: v for k, v in (judged or {}).items() if k != "table"}
    write_text(json.dumps({**summary, "verdicts": verdict_json}, indent=2) + "\n",
               out_dir / "summary.json")  # fmt: skip
    budget = max(s["macs"] for s in summary.values())
    plan = plan_section(metrics_dir, params_path, budget)
    write_text(markdown(summary, runs, judged) + "\n" + plan, table)
    return {**summary, "verdicts": verdict_json}


def print_verdicts(summary: dict, table: Path) -> None:
    """What `python -m pipelines report` prints: each configuration's accuracy [95 % CI] and
    verdict, the headline, the table's path. `summary`: what `report` returned (or its
    `report/summary.json`)."""
    summary = dict(summary)
    judged = summary.pop("verdicts")
    for config, s in summary.items():
        verdict = judged.get("rows", {}).get(config, {}).get("verdict", "")
        print(f"{label(config, s):40s} {acc_ci(s):24s} % {verdict}")
    print(judged.get("headline") or "no baseline: no verdicts")
    print(f"wrote {table}")


def _run(args: argparse.Namespace) -> int:
    summary = report(Path(args.params), Path(args.metrics), Path(args.models), Path(args.out))
    print_verdicts(summary, Path(args.out) / "report.md")
    return 0


def add(p: argparse.ArgumentParser) -> None:
    """`python -m pipelines report`."""
    p.add_argument("--params", default="params.yaml", help="params file with a compare section")
    p.add_argument("--metrics", default="reports/evaluate", help="folder of metrics JSON")
    p.add_argument("--models", default="models", help="folder of run dirs (history.json)")
    p.add_argument("--out", default="reports", help="writes OUT/report.md and OUT/report/")
    p.set_defaults(func=_run)
