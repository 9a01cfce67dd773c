"""Markdown tables of the Prefect flows: one run (members, k-of-S, ensemble) and a sweep."""

from __future__ import annotations

from typing import Any

from pipelines.common import verdicts
from pipelines.common.format import si


def _latency(row: dict[str, Any]) -> str:
    times = row.get("latency_ms") or {}
    return ", ".join(f"{ms:.2f} (b={b})" for b, ms in times.items()) or "-"


def _cells(row: dict[str, Any]) -> str:
    costs = " | ".join(si(row[k]) if k in row else "-" for k in ("params", "macs"))
    return f"{row['acc']:.2f} | {row.get('nll', float('nan')):.4f} | {costs}"


def experiment_table(label: str, metrics: dict[str, Any], flops: dict[str, Any]) -> str:
    """Members, every k-of-S prefix (the last is the ensemble) and the undivided model;
    methods without prefixes (cooperative) list their accuracy-vs-cost curve instead."""
    members, prefixes = metrics["members"], metrics.get("prefixes") or []
    s = len(members)
    lines = [
        f"### {label}",
        "",
        "| model | test acc % | NLL | params | MACs | latency ms |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for m in members:
        name = m.get("name") or f"member {m['index']}"
        lines.append(f"| {name} | {_cells(m)} | - |")
    for p in prefixes:
        name = f"k={p['k']} of S={s}" + (" (ensemble)" if p["k"] == s else "")
        lines.append(f"| {name} | {_cells(p)} | {_latency(p)} |")
    if not prefixes:
        ens = metrics["ensemble"]
        lines.append(f"| ensemble | {_cells(ens)} | {_latency(ens)} |")
        lines += [f"| {c['label']} | {_cells(c)} | - |" for c in metrics.get("curve", [])]
    undivided = flops.get("undivided")
    if undivided and s > 1 and prefixes:
        costs = f"{si(undivided['params'])} | {si(undivided['macs'])}"
        lines.append(f"| undivided (S=1, not trained) | - | - | {costs} | - |")
    ratio = flops.get("ratio_to_undivided", {}) if prefixes else {}
    lines += [
        "",
        f"{metrics.get('num_test', '?')} test images; ensemble = "
        f"{metrics['ensemble'].get('method', '?')}; MACs = multiply-adds "
        "(torch.utils.flop_counter FLOPs / 2)."
        + (
            f" Ensemble / undivided: params x{ratio['params']:.3f}, MACs x{ratio['macs']:.3f}."
            if ratio
            else ""
        ),
        "",
    ]
    return "\n".join(lines)


def sweep_verdicts(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Every sweep point against the first undivided one (S = 1), on its predictions; None
    when no point is undivided or a point has no predictions file."""
    from dnc.evaluation.predictions import read_predictions

    baseline = next((r["label"] for r in rows if r.get("split.factor") == 1), None)
    if baseline is None or not all(r.get("predictions") for r in rows):
        return None
    correct = {
        r["label"]: {int(r.get("seed", 0)): read_predictions(r["predictions"]).correct()}
        for r in rows
    }
    judged = verdicts.verdicts(correct, baseline)
    return {**verdicts.summary(judged, baseline), "table": verdicts.table(judged, baseline)}


def comparison_table(rows: list[dict[str, Any]]) -> str:
    """One line per sweep configuration (its swept values), then each against the undivided
    point with its verdict (pipelines.common.verdicts); no row is called best otherwise."""
    keys = list(dict.fromkeys(k for r in rows for k in r["point"]))
    lines = [
        "### dnc-sweep",
        "",
        "| " + " | ".join(keys) + " | ensemble acc % | best member acc % | params | MACs | run |",
        "|" + "---:|" * (len(keys) + 4) + "---|",
    ]
    for r in sorted(rows, key=lambda r: (r["macs"], r["label"])):
        swept = " | ".join(str(r["point"].get(k, "")) for k in keys)
        lines.append(
            f"| {swept} | {r['ensemble_acc']:.2f} | {r['best_member_acc']:.2f} "
            f"| {si(r['params'])} | {si(r['macs'])} | {r['label']} |"
        )
    judged = sweep_verdicts(rows)
    if judged is None:
        lines += ["", "No undivided (S = 1) point to test against: no verdicts."]
    else:
        lines += [
            "",
            f"Against **{judged['baseline']}** (one seed per point: no seed CI; McNemar's "
            f"exact test on the test predictions, alpha = {judged['alpha']:g}):",
            "",
            judged["table"].rstrip("\n"),
            "",
            f"**{judged['headline']}**",
        ]
    return "\n".join(lines) + "\n"
