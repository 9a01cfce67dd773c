"""`python -m pipelines compare --experiment NAME`: evaluated runs side by side.

Reads the runs of an MLflow experiment (the store of `pipelines.tracking.mlflow_run`), prints a
table (S, widths, ensemble accuracy, MACs, params, entry point) and writes it as markdown and JSON
next to a PNG of test accuracy against MACs: one line per configuration (runs that differ
only in their seed are averaged), through its k-of-S prefixes (the cheaper models every
SplitNet contains) or, for the cooperative method, its Teammate depths, labelled with the
params that tell the configurations apart.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from dnc.config import ConfigError
from pipelines.common.format import si

# (header, where in the run, format): where = "params.x" | "tags.x" | "metrics.x" | "info.x"
COLUMNS: list[tuple[str, str, str]] = [
    ("run", "info.run_name", "{}"),
    ("config", "tags.dnc.config", "{}"),
    ("seed", "params.seed", "{}"),
    ("method", "tags.dnc.method", "{}"),
    ("model", "tags.dnc.model", "{}"),
    ("dataset", "tags.dnc.dataset", "{}"),
    ("S", "params.split.factor", "{}"),
    ("width", "tags.dnc.width", "{}"),
    ("member width", "tags.dnc.member_width", "{}"),
    ("acc %", "metrics.test/ensemble/acc", "{:.2f}"),
    ("nll", "metrics.test/ensemble/nll", "{:.4f}"),
    ("MACs", "metrics.test/ensemble/macs", "si"),
    ("params", "metrics.test/ensemble/params", "si"),
    ("entry point", "tags.dnc.entry_point", "{}"),
    ("run id", "info.run_id", "{}"),
]


def run_row(run: Any) -> dict[str, Any]:
    """One run as {header: value} plus its accuracy-vs-MACs points under `curve`."""
    sources = {
        "info": {"run_name": run.info.run_name, "run_id": run.info.run_id},
        "params": run.data.params,
        "tags": run.data.tags,
        "metrics": run.data.metrics,
    }
    row: dict[str, Any] = {}
    for header, where, _ in COLUMNS:
        kind, key = where.split(".", 1)
        row[header] = sources[kind].get(key)
    row["curve"] = run_curve(run.data.metrics, run.data.tags)
    return row


def run_curve(metrics: dict[str, float], tags: dict[str, str]) -> list[dict[str, Any]]:
    """A run's accuracy-vs-MACs points: its `test/curve_<i>` (k-of-S prefixes, cooperative
    depths), else its `test/k_<k>` prefixes, each with a label."""
    labels = json.loads(tags.get("dnc.curve_labels", "[]"))
    points, i = [], 0
    while f"test/curve_{i}/acc" in metrics:
        label = labels[i] if i < len(labels) else str(i)
        points.append({"label": label, **_point(metrics, f"test/curve_{i}")})
        i += 1
    k = 1
    while not i and f"test/k_{k}/acc" in metrics:  # no curve logged: the prefixes
        points.append({"label": f"k={k}", **_point(metrics, f"test/k_{k}")})
        k += 1
    return points


def _point(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {"acc": metrics[f"{prefix}/acc"], "macs": metrics[f"{prefix}/macs"]}


def collect_rows(experiment: str, uri: str | None = None) -> list[dict[str, Any]]:
    """Evaluated runs (those with `test/ensemble/acc`) of `experiment`, cheapest first."""
    from pipelines.tracking.store import Store

    store = Store.connect(uri)
    found = store.client.get_experiment_by_name(experiment)
    if found is None:
        raise ConfigError(f"--experiment {experiment}: no such experiment in {store.uri}")
    runs, token = [], None
    while True:
        page = store.client.search_runs(
            [found.experiment_id],
            filter_string="metrics.`test/ensemble/acc` > -1",
            max_results=1000,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            break
    keys = configuration_keys([run.data.params for run in runs])
    rows = [
        {**run_row(run), "configuration": {k: run.data.params.get(k) for k in keys}}
        for run in runs
    ]
    return sorted(rows, key=lambda r: (r["MACs"] or 0.0, -(r["acc %"] or 0.0)))


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A GitHub-markdown table of `rows` with COLUMNS' formats."""

    def cell(value: Any, fmt: str) -> str:
        if value is None:
            return ""
        return si(float(value)) if fmt == "si" else fmt.format(value)

    lines = [
        "| " + " | ".join(h for h, _, _ in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(cell(row[h], fmt) for h, _, fmt in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


# Repeats of one configuration differ only in these params.
REPEAT_KEYS = frozenset({"seed"})


def configuration_keys(runs_params: list[dict[str, str]]) -> list[str]:
    """The params keys whose values differ between runs, the seed aside: what tells one
    configuration from another (run names repeat: every S=1 run is `small_cnn-S1-...`)."""
    keys = set().union(*runs_params) - REPEAT_KEYS if runs_params else set()
    return sorted(k for k in keys if len({p.get(k) for p in runs_params}) > 1)


def configuration_label(configuration: dict[str, Any]) -> str:
    """`split.factor=2, model.width=16`: the keys that set a configuration apart."""
    return ", ".join(f"{k}={v}" for k, v in configuration.items()) or "all runs"


def plot_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Points for `plots.accuracy_vs_macs`: one curve per configuration through its
    cost/accuracy points (SplitNet: k-of-S prefixes, the last is the full ensemble; else one
    point), each the mean over the configuration's runs (seeds)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(configuration_label(row.get("configuration", {})), []).append(row)
    points = []
    for label, members in groups.items():
        curve = f"{label} (mean of {len(members)} runs)" if len(members) > 1 else label
        by_label: dict[str, list[dict[str, Any]]] = {}
        for row in members:
            ensemble = {"label": "ensemble", "acc": row["acc %"], "macs": row["MACs"]}
            for point in row["curve"] or [ensemble]:
                by_label.setdefault(point["label"], []).append(point)
        for name, same in by_label.items():
            acc = sum(p["acc"] for p in same) / len(same)
            macs = sum(p["macs"] for p in same) / len(same)
            points.append({"label": name, "acc": acc, "macs": macs, "curve": curve})
    return points


def compare(experiment: str, out_dir: Path, uri: str | None = None) -> dict[str, Any]:
    """Write compare.md, compare.json and accuracy_vs_macs.png for `experiment`."""
    from pipelines.dvc.plots import accuracy_vs_macs  # matplotlib: only when plotting

    rows = collect_rows(experiment, uri)
    if not rows:
        raise ConfigError(f"--experiment {experiment}: no evaluated runs (test/ensemble/acc)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows)
    (out_dir / "compare.md").write_text(f"# Experiment `{experiment}`\n\n{table}")
    (out_dir / "compare.json").write_text(json.dumps(rows, indent=2) + "\n")
    title = f"{experiment}: test accuracy vs MACs per configuration (k-of-S prefixes / depths)"
    png = accuracy_vs_macs(plot_rows(rows), out_dir / "accuracy_vs_macs.png", title)
    return {"rows": rows, "table": table, "png": png}


def _run(args: argparse.Namespace) -> int:
    out = compare(args.experiment, Path(args.out), args.tracking_uri)
    print(out["table"], end="")
    print(f"wrote {args.out}/compare.md, compare.json, {out['png'].name}")
    return 0


def add(p: argparse.ArgumentParser) -> None:
    """`python -m pipelines compare`."""
    p.add_argument(
        "--experiment",
        default=os.environ.get("MLFLOW_EXPERIMENT_NAME") or "dnc",
        help="MLflow experiment name (default: $MLFLOW_EXPERIMENT_NAME or dnc)",
    )
    p.add_argument("--out", default="reports/compare", help="folder for md/json/png")
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="tracking store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )
    p.set_defaults(func=_run)
