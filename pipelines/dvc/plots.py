"""Matplotlib (Agg, files only) figures shared by the report stage, the search and the flows.

Every function writes a PNG atomically (temp file + rename), so a killed process never
leaves half an image that DVC would cache, and returns the path it wrote.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from pipelines.common.format import si  # noqa: E402

# One series of a line plot: (x values, y values, y standard deviations or None).
Series = tuple[Sequence[float], Sequence[float], Sequence[float] | None]


def save_figure(fig: Figure, out_png: Path) -> Path:
    """Write `fig` as PNG to `out_png` atomically and close it."""
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_png.name}.", dir=out_png.parent)
    os.close(fd)
    try:
        # Fixed metadata: the same figure gives the same bytes, so DVC sees no change.
        fig.savefig(tmp, format="png", metadata={"Software": None})
        os.replace(tmp, out_png)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out_png


def _tick(value: float, _pos: Any = None) -> str:
    return si(value, digits=None)  # ticks are round numbers: no trailing zeros


def accuracy_vs_macs(rows: list[dict[str, Any]], out_png: Path, title: str) -> Path:
    """Accuracy (%) against MACs (log axis), one marker per row, error bars where given.

    A row has `label`, `macs`, `acc` and optionally `acc_std` (error bar), `curve` (rows
    with the same curve id are joined by a line in MACs order and share a colour; the
    legend names the curve) and `annotate` (False: no text beside the marker).
    """
    if not rows:
        raise ValueError("accuracy_vs_macs: no rows to plot")
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=110)
    curves: dict[str, list[dict[str, Any]]] = {}
    for i, row in enumerate(rows):
        curves.setdefault(str(row.get("curve", f"_point{i}")), []).append(row)
    for curve, members in curves.items():
        members = sorted(members, key=lambda r: r["macs"])
        xs = [float(r["macs"]) for r in members]
        ys = [float(r["acc"]) for r in members]
        errs = [float(r.get("acc_std") or 0.0) for r in members]
        alone = curve.startswith("_point")
        label = members[0]["label"] if alone else curve
        ax.errorbar(
            xs, ys, yerr=errs if any(errs) else None, marker="o", ms=5, capsize=3,
            linestyle="none" if alone or len(xs) == 1 else "-", label=label,
        )  # fmt: skip
        for row, x, y in zip(members, xs, ys, strict=True):
            if row.get("annotate", True) and not alone:
                ax.annotate(str(row["label"]), (x, y), textcoords="offset points",
                            xytext=(4, -10), fontsize=7)  # fmt: skip
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(_tick)
    ax.xaxis.set_minor_formatter(_tick)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("inference MACs per image (multiply-adds, summed over members)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return save_figure(fig, out_png)


def line_panels(
    panels: Mapping[str, Mapping[str, Series]],
    out_png: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    emphasise: str | None = None,
) -> Path:
    """One subplot per panel, one line per series (shaded ± std where given).

    `emphasise` names the series drawn thick in every panel (e.g. the ensemble).
    """
    if not panels:
        raise ValueError("line_panels: no panels to plot")
    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(
        nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), dpi=100, squeeze=False, sharey=True
    )
    for ax, (panel, series) in zip(axes.flat, panels.items(), strict=False):
        for name, (xs, ys, std) in series.items():
            thick = name == emphasise
            (line,) = ax.plot(xs, ys, lw=2.2 if thick else 1.0, marker="o", ms=3, label=name)
            if std is not None:
                lo = [y - s for y, s in zip(ys, std, strict=True)]
                hi = [y + s for y, s in zip(ys, std, strict=True)]
                ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15)
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs, steps, S
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out_png)


def reliability_diagram(
    bins: Mapping[str, Mapping[str, Sequence[float]]], out_png: Path, title: str
) -> Path:
    """Accuracy against confidence per equal-width bin, one panel per predictor.

    `bins`: label -> {"edges", "count", "confidence", "accuracy"} (dnc.evaluation's
    `reliability` of the ensemble, counts summed over seeds); the diagonal is perfect
    calibration, bars below it are over-confident bins. Empty bins are left out.
    """
    if not bins:
        raise ValueError("reliability_diagram: nothing to plot")
    n = len(bins)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.4 * rows), dpi=110, squeeze=False)
    for ax, (label, b) in zip(axes.flat, bins.items(), strict=False):
        edges = list(b["edges"])
        width = edges[1] - edges[0]
        keep = [i for i, c in enumerate(b["count"]) if c > 0]
        ax.bar([edges[i] for i in keep], [b["accuracy"][i] for i in keep], width=width,
               align="edge", edgecolor="black", alpha=0.7, label="accuracy")  # fmt: skip
        ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
        ax.scatter([b["confidence"][i] for i in keep], [b["accuracy"][i] for i in keep],
                   s=10, color="tab:red", zorder=3, label="(confidence, accuracy)")  # fmt: skip
        ax.set(xlim=(0, 1), ylim=(0, 1), title=label, xlabel="confidence", ylabel="accuracy")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out_png)
