"""Statistical verdicts for comparing configurations: seed CIs, paired tests, McNemar.

A comparison row answers "is this configuration better than the baseline at this budget?".
Two pieces of evidence are computed and shown side by side:

- over seeds: the mean accuracy with its Student-t CI, and the paired difference to the
  baseline (seed k against seed k) with its t CI and p-value;
- per test example: McNemar's exact test on the discordant predictions of each seed,
  combined across seeds by **pooling the discordant counts** (summing, over seeds, the examples
  only the candidate got right and those only the baseline got right) into one exact binomial test.

**The pooled McNemar test decides the verdict** (`verdict`), at alpha = 0.05. Why it and not the
seed t-test: with the 2-5 seeds a budget allows, the t-test has almost no power (t_0.975 is 12.7
with 2 seeds, 4.3 with 3), while thousands of paired test predictions do. Caveat of pooling: it
treats each (seed, example) pair as an independent trial, but the same test examples recur in
every seed and hard examples tend to be discordant in every seed, so the pooled test overstates
the evidence somewhat and answers "on this test set" more than "for any training run"; it does
not model seed-to-seed training variance. The paired seed CI printed beside it is the check on
that: a "better" whose seed CI spans zero rests on the test set, not on replication. No
multiplicity correction is applied across rows (each row is tested at alpha on its own).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05
VERDICTS = ("better", "worse", "indistinguishable")


@dataclass(frozen=True)
class MeanCI:
    """A mean over seeds with its two-sided Student-t CI; `low`/`high` are None when n < 2."""

    mean: float
    n: int
    low: float | None
    high: float | None
    level: float

    @property
    def half_width(self) -> float | None:
        """Half the CI width, or None when the CI is undefined (one value)."""
        return None if self.low is None or self.high is None else (self.high - self.low) / 2


@dataclass(frozen=True)
class PairedDifference:
    """Mean of `a - b` over paired seeds, its t CI and two-sided paired t-test p-value.

    `low`, `high` and `p` are None with one pair (no variance estimate).
    """

    mean: float
    n: int
    low: float | None
    high: float | None
    p: float | None
    level: float


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test of a against b on paired per-example correctness.

    `only_a`: examples a got right and b wrong; `only_b`: the reverse; `n`: paired examples
    (summed over seeds when pooled); `p`: two-sided exact binomial p on the discordant counts.
    """

    only_a: int
    only_b: int
    n: int
    p: float


@dataclass(frozen=True)
class Comparison:
    """One configuration against the baseline: the evidence and its verdict word."""

    name: str
    accuracy: MeanCI
    difference: PairedDifference
    mcnemar: McNemar
    verdict: str


def _floats(values: Sequence[float], what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0:
        raise ValueError(f"{what}: no values")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what}: values must be finite, got {arr.tolist()}")
    return arr


def _t_interval(arr: np.ndarray, level: float) -> tuple[float | None, float | None]:
    if arr.size < 2:
        return None, None
    half = stats.t.ppf(0.5 + level / 2, df=arr.size - 1) * arr.std(ddof=1) / math.sqrt(arr.size)
    return float(arr.mean() - half), float(arr.mean() + half)


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")


def mean_ci(values: Sequence[float], level: float = 0.95) -> MeanCI:
    """Mean of `values` with its Student-t CI (n - 1 degrees of freedom); undefined for n = 1."""
    _check_level(level)
    arr = _floats(values, "mean_ci")
    low, high = _t_interval(arr, level)
    return MeanCI(mean=float(arr.mean()), n=int(arr.size), low=low, high=high, level=level)


def paired_difference(
    a: Sequence[float], b: Sequence[float], level: float = 0.95
) -> PairedDifference:
    """Paired difference `a[k] - b[k]` over seeds: mean, Student-t CI and paired t-test p.

    When every difference is equal (zero spread) the t statistic is infinite or 0/0: p is then
    0.0 for a non-zero difference and 1.0 for a zero one, and the CI collapses to the point.
    """
    _check_level(level)
    a_arr, b_arr = _floats(a, "paired_difference a"), _floats(b, "paired_difference b")
    if a_arr.size != b_arr.size:
        raise ValueError(f"paired_difference: {a_arr.size} values against {b_arr.size}")
    d = a_arr - b_arr
    low, high = _t_interval(d, level)
    p: float | None = None
    if d.size >= 2:
        sd = d.std(ddof=1)
        if sd == 0:
            p = 1.0 if d.mean() == 0 else 0.0
        else:
            t = d.mean() / (sd / math.sqrt(d.size))
            p = float(2 * stats.t.sf(abs(t), df=d.size - 1))
    return PairedDifference(float(d.mean()), int(d.size), low, high, p, level)


def _bools(values: Sequence[bool], what: str) -> np.ndarray:
    arr = np.asarray(values).ravel()
    if arr.dtype != bool and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{what}: per-example correctness must be booleans (or 0/1)")
    return arr.astype(bool)


def _binomial_p(only_a: int, only_b: int) -> float:
    discordant = only_a + only_b
    if discordant == 0:
        return 1.0  # the two never disagree: no evidence either way
    return float(stats.binomtest(only_a, discordant, 0.5).pvalue)


def mcnemar_exact(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> McNemar:
    """McNemar's exact test on one seed: per-example correctness of a and of b, same examples."""
    ca, cb = _bools(correct_a, "mcnemar_exact a"), _bools(correct_b, "mcnemar_exact b")
    if ca.size != cb.size:
        raise ValueError(f"mcnemar_exact: {ca.size} predictions against {cb.size}")
    only_a, only_b = int(np.sum(ca & ~cb)), int(np.sum(~ca & cb))
    return McNemar(only_a, only_b, int(ca.size), _binomial_p(only_a, only_b))


def pooled_mcnemar(per_seed: Sequence[McNemar]) -> McNemar:
    """Combine per-seed McNemar tests by summing their discordant counts (see module docstring)."""
    if not per_seed:
        raise ValueError("pooled_mcnemar: no seeds")
    only_a = sum(m.only_a for m in per_seed)
    only_b = sum(m.only_b for m in per_seed)
    return McNemar(only_a, only_b, sum(m.n for m in per_seed), _binomial_p(only_a, only_b))


def verdict(test: McNemar, alpha: float = ALPHA) -> str:
    """'better' / 'worse' (a against b) when the McNemar p < alpha, else 'indistinguishable'."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if test.p >= alpha or test.only_a == test.only_b:
        return "indistinguishable"
    return "better" if test.only_a > test.only_b else "worse"


def compare_to_baseline(
    name: str,
    correct: Mapping[int, Sequence[bool]],
    baseline_correct: Mapping[int, Sequence[bool]],
    alpha: float = ALPHA,
    level: float = 0.95,
) -> Comparison:
    """One row: `name`'s per-seed test correctness against the baseline's, paired by seed."""
    if set(correct) != set(baseline_correct):
        raise ValueError(
            f"{name}: seeds {sorted(correct)} do not match the baseline's "
            f"{sorted(baseline_correct)}"
        )
    seeds = sorted(correct)
    if not seeds:
        raise ValueError(f"{name}: no seeds")
    acc = [float(np.mean(_bools(correct[s], name))) for s in seeds]
    base_acc = [float(np.mean(_bools(baseline_correct[s], "baseline"))) for s in seeds]
    pooled = pooled_mcnemar([mcnemar_exact(correct[s], baseline_correct[s]) for s in seeds])
    return Comparison(
        name=name,
        accuracy=mean_ci(acc, level),
        difference=paired_difference(acc, base_acc, level),
        mcnemar=pooled,
        verdict=verdict(pooled, alpha),
    )


def headline(rows: Sequence[Comparison], baseline: str, alpha: float = ALPHA) -> str:
    """One sentence naming a winner only when its verdict (the pooled McNemar test) supports it.

    Several 'better' rows: the largest mean seed difference is named first; they are not tested
    against each other, so the sentence ranks none of them above the rest.
    """
    others = [r for r in rows if r.name != baseline]
    better = sorted((r for r in others if r.verdict == "better"), key=lambda r: -r.difference.mean)
    worse = [r.name for r in others if r.verdict == "worse"]
    if better:
        best = better[0]
        text = (
            f"{best.name} is better than the baseline {baseline}: "
            f"{100 * best.difference.mean:+.2f} points over {best.difference.n} seeds, "
            f"pooled McNemar p = {best.mcnemar.p:.2g} < {alpha:g}"
        )
        if len(better) > 1:
            text += (
                "; also better than the baseline (not tested against each other): "
                + ", ".join(r.name for r in better[1:])
            )
        return text + "."
    if worse:
        return (
            f"No configuration is better than the baseline {baseline} at this budget "
            f"(alpha = {alpha:g}); worse than it: {', '.join(worse)}."
        )
    return (
        f"No configuration is distinguishable from the baseline {baseline} at this budget "
        f"(pooled McNemar, alpha = {alpha:g})."
    )
