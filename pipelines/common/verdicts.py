"""Verdict tables: every configuration against the baseline, the same in every report.

The DVC report, the Prefect sweep comparison, `pipelines compare` and the search report all
call `verdicts` on per-seed, per-example test correctness and print `table` and the
`headline` (pipelines.common.stats: the pooled McNemar test decides, the paired seed CI is
shown beside it). A report never names a "best" configuration any other way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipelines.common.stats import ALPHA, Comparison, MeanCI, compare_to_baseline, headline

Correct = Mapping[str, Mapping[int, Sequence[bool]]]  # config -> seed -> (N,) correctness


def verdicts(correct: Correct, baseline: str, alpha: float = ALPHA) -> list[Comparison]:
    """One `Comparison` per configuration (the baseline included, as its own reference)."""
    if baseline not in correct:
        raise ValueError(f"baseline {baseline!r} has no predictions")
    return [
        compare_to_baseline(name, seeds, correct[baseline], alpha=alpha)
        for name, seeds in correct.items()
    ]


def ci_text(ci: MeanCI | Any, scale: float = 100.0, sign: bool = False) -> str:
    """`77.91 [77.40, 78.42]` (percent points); the CI is `n/a` with one seed."""
    fmt = "{:+.2f}" if sign else "{:.2f}"
    mean = fmt.format(scale * ci.mean)
    if ci.low is None or ci.high is None:
        return f"{mean} [n/a]"
    return f"{mean} [{fmt.format(scale * ci.low)}, {fmt.format(scale * ci.high)}]"


def table(rows: Sequence[Comparison], baseline: str, alpha: float = ALPHA) -> str:
    """Markdown: accuracy with its 95 % t CI over seeds; against the baseline the paired
    seed difference with its CI, the pooled McNemar counts and p, and the verdict word."""
    lines = [
        "| config | n seeds | test acc % [95 % CI] | vs baseline, points [95 % CI] "
        "| only it right / only baseline right | pooled McNemar p | verdict |",
        "|---|---:|---|---|---:|---:|---|",
    ]
    for r in rows:
        if r.name == baseline:
            lines.append(
                f"| {r.name} | {r.accuracy.n} | {ci_text(r.accuracy)} | (baseline) | - | - | - |"
            )
            continue
        m = r.mcnemar
        lines.append(
            f"| {r.name} | {r.accuracy.n} | {ci_text(r.accuracy)} | "
            f"{ci_text(r.difference, sign=True)} | {m.only_a} / {m.only_b} | {m.p:.2g} | "
            f"**{r.verdict}** |"
        )
    return "\n".join(lines) + "\n"


def summary(rows: Sequence[Comparison], baseline: str, alpha: float = ALPHA) -> dict[str, Any]:
    """The verdicts as JSON data (DVC metrics, flow artifacts)."""
    out: dict[str, Any] = {"baseline": baseline, "alpha": alpha, "test": "pooled McNemar"}
    out["headline"] = headline(rows, baseline, alpha)
    out["rows"] = {
        r.name: {
            "acc_mean": 100 * r.accuracy.mean,
            "acc_ci": _pct(r.accuracy.low, r.accuracy.high),
            "diff_mean": 100 * r.difference.mean,
            "diff_ci": _pct(r.difference.low, r.difference.high),
            "diff_p": r.difference.p,
            "only_it": r.mcnemar.only_a,
            "only_baseline": r.mcnemar.only_b,
            "mcnemar_p": r.mcnemar.p,
            "verdict": "baseline" if r.name == baseline else r.verdict,
        }
        for r in rows
    }
    return out


def _pct(low: float | None, high: float | None) -> list[float] | None:
    return None if low is None or high is None else [100 * low, 100 * high]


def correct_of(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Per-example correctness (N,) bool."""
    return np.asarray(predicted) == np.asarray(labels)


__all__ = ["Correct", "ci_text", "correct_of", "headline", "summary", "table", "verdicts"]
