"""Compare the three methods and plain training on one accuracy-vs-MACs figure.

Trains, through `dnc.stages` (the one train/evaluate implementation), on the data of
`params.yaml` with its model and schedule:
  plain        method splitnet, split.factor 1  (the compact net trained plainly)
  splitnet     method splitnet, split.factor 2  (two members of width ~W/sqrt(2))
  cooperative  method cooperative               (two Teammates, their depths, a Leader)
  auxiliary    method auxiliary, split.factor 1 (the plain net + a training-only wide path)
  auxiliary_auto  the same with attach: auto (learned hierarchical connection gates)
and writes per-run metrics JSON, summary.json/.md and accuracy_vs_macs.png into --out.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/compare_methods.py --out reports/methods
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dnc import stages
from dnc.config_loading import load_params, parse_set
from dnc.data import get_dataset_info
from dnc.io import write_json
from dnc.methods import get_method
from pipelines.dvc.plots import accuracy_vs_macs

RUNS: dict[str, dict[str, Any]] = {
    "plain": {"method": "splitnet", "split.factor": 1},
    "splitnet": {"method": "splitnet", "split.factor": 2},
    "cooperative": {"method": "cooperative"},
    "auxiliary": {"method": "auxiliary", "split.factor": 1},
    "auxiliary_auto": {"method": "auxiliary", "split.factor": 1, "auxiliary.attach": "auto"},
}


def run_one(name: str, params: Any, data_dir: Path, out: Path) -> dict[str, Any]:
    """Train (resuming a finished run is a no-op) and evaluate one configuration."""
    result = stages.train(params, data_dir, out / "runs" / name)
    metrics = stages.evaluate(params, data_dir, out / "runs" / name, out / f"{name}.json")
    history = result.state.history  # recorded per epoch, so a resumed run keeps its times
    extra = get_method(params.method).info(params, get_dataset_info(params.data.dataset))
    return {
        "name": name,
        "metrics": metrics,
        "train_s": sum(h["train/epoch_time_s"] for h in history),
        "images_per_s": sum(h["train/images_per_s"] for h in history) / len(history),
        "best_epoch": result.state.best_epoch,
        "training_params": next(iter(extra.values()), {}).get("training_params"),
    }


def plot_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every run's `curve` as rows of one figure; the Leader as a lone reference point."""
    rows = []
    for run in runs:
        for row in run["metrics"]["curve"]:
            rows.append({**row, "curve": run["name"]})
        leader = run["metrics"].get("leader")
        if leader:
            rows.append({"label": "cooperative Leader (trains only)", **leader})
    return rows


def table(runs: list[dict[str, Any]]) -> str:
    """Markdown: one line per curve point."""
    lines = [
        "| run | point | test acc % | MACs | params | train s | img/s | best epoch |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        for row in run["metrics"]["curve"]:
            lines.append(
                f"| {run['name']} | {row['label']} | {row['acc']:.2f} | {row['macs']:,} "
                f"| {row['params']:,} | {run['train_s']:.0f} | {run['images_per_s']:.0f} "
                f"| {run['best_epoch']} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--out", default="reports/methods")
    args = parser.parse_args(argv)
    out = Path(args.out)
    base = load_params(args.params, parse_set(args.set))
    data_dir = out / "data"
    if not (data_dir / "meta.json").is_file():
        stages.prepare(base, data_dir)
    runs = []
    for name in args.runs:
        params = base.with_overrides(RUNS[name])
        runs.append(run_one(name, params, data_dir, out))
        print(f"{name}: {[round(r['acc'], 2) for r in runs[-1]['metrics']['curve']]}", flush=True)
    title = (
        f"{base.model.name} on {base.data.dataset}: {base.train.epochs} epochs, seed {base.seed}"
    )
    accuracy_vs_macs(plot_rows(runs), out / "accuracy_vs_macs.png", title)
    summary = [
        {k: v for k, v in run.items() if k != "metrics"} | {"curve": run["metrics"]["curve"]}
        for run in runs
    ]
    write_json({"overrides": args.set, "runs": summary}, out / "summary.json")
    (out / "summary.md").write_text(table(runs))
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
