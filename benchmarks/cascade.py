"""Cascade vs fixed k-of-S prefixes at equal MACs, from one evaluate metrics JSON.

    python -m dnc train --set split.factor=4 --out runs/cascade_s4
    python -m dnc evaluate --set split.factor=4 --set eval.cascade_budget_macs=7100000 \\
        --model-dir runs/cascade_s4 --out runs/cascade_s4/metrics.json
    python benchmarks/cascade.py runs/cascade_s4/metrics.json --plot docs/cascade.png

Prints a markdown table: per tau, the cascade's accuracy and mean MACs, the accuracy of
the prefix curve linearly interpolated at the same MACs (what mixing two fixed prefixes
would give) and the difference; and the latency at each measured batch size.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def table(metrics: dict) -> str:
    """Markdown rows: cascade vs interpolated prefixes, per tau."""
    prefixes = metrics["prefixes"]
    xs = [p["macs"] for p in prefixes]
    ys = [p["acc"] for p in prefixes]
    cascade = metrics["cascade"]
    batches = list(cascade["points"][0]["latency_ms"])
    head = " | ".join(f"ms b{b}" for b in batches)
    lines = [
        f"gate {cascade['gate']}; prefixes: "
        + ", ".join(f"k={p['k']} {p['acc']:.2f}% @ {p['macs'] / 1e6:.2f}M "
                    f"({' / '.join(f'{v:.2f}' for v in p['latency_ms'].values())} ms)"
                    for p in prefixes),
        "",
        f"| tau | cascade acc % | mean MACs (M) | prefixes at same MACs % | diff (pt) | {head} |",
        "|---:|---:|---:|---:|---:|" + "---:|" * len(batches),
    ]  # fmt: skip
    for p in cascade["points"]:
        same = float(np.interp(p["macs"], xs, ys))
        ms = " | ".join(f"{p['latency_ms'][b]:.2f}" for b in batches)
        lines.append(
            f"| {p['tau']:g} | {p['acc']:.2f} | {p['macs'] / 1e6:.2f} | {same:.2f} "
            f"| {p['acc'] - same:+.2f} | {ms} |"
        )
    if cascade.get("budget"):
        b = cascade["budget"]
        lines += [
            "",
            f"budget {b['budget_macs'] / 1e6:.2f}M MACs: tau={b['tau']:g} picked on val "
            f"({b['val_acc']:.2f}% @ {b['val_macs'] / 1e6:.2f}M) -> test {b['test_acc']:.2f}% "
            f"@ {b['test_macs'] / 1e6:.2f}M",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics", help="an evaluate metrics JSON with a cascade section")
    parser.add_argument("--plot", help="PNG: accuracy vs MACs, prefixes and cascade")
    args = parser.parse_args(argv)
    metrics = json.loads(Path(args.metrics).read_text())
    print(table(metrics))
    if args.plot:
        from pipelines.dvc.plots import accuracy_vs_macs

        rows = [
            {
                "label": f"k={p['k']}",
                "macs": p["macs"],
                "acc": p["acc"],
                "curve": "fixed k-of-S prefixes",
            }
            for p in metrics["prefixes"]
        ]
        rows += [{"label": f"τ={p['tau']:g}", "macs": p["macs"], "acc": p["acc"],
                  "curve": f"cascade ({metrics['cascade']['gate']})", "annotate": False}
                 for p in metrics["cascade"]["points"]]  # fmt: skip
        c = metrics["config"]
        title = f"{c['dataset']}, {c['model']} S={c['split_factor']}: cascade vs prefixes"
        accuracy_vs_macs(rows, Path(args.plot), title)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
