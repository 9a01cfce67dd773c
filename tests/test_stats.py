"""Statistical verdicts against closed forms, hand values and constructed classifiers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipelines.common.stats import (
    McNemar,
    compare_to_baseline,
    headline,
    mcnemar_exact,
    mean_ci,
    paired_difference,
    pooled_mcnemar,
    verdict,
)


def exact_two_sided(k: int, n: int) -> float:
    """Two-sided exact binomial p at 1/2, by hand: twice the smaller tail, capped at 1."""
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2**n
    return min(1.0, 2 * tail)


def classifiers(only_a: int, only_b: int, both: int = 50, neither: int = 20):
    """Per-example correctness of two classifiers differing on exactly only_a + only_b examples."""
    a = [True] * only_a + [False] * only_b + [True] * both + [False] * neither
    b = [False] * only_a + [True] * only_b + [True] * both + [False] * neither
    return np.array(a), np.array(b)


# t quantiles: closed forms for 1 and 2 degrees of freedom, printed tables for 4 and 9.
T975 = {
    1: math.tan(math.pi * 0.475),
    2: 0.95 / math.sqrt(2 * 0.975 * 0.025),
    4: 2.776445,
    9: 2.262157,
}


@pytest.mark.parametrize("df", sorted(T975))
def test_mean_ci_uses_the_student_t_quantile(df):
    values = np.arange(df + 1, dtype=float)  # n = df + 1 values
    ci = mean_ci(values)
    se = values.std(ddof=1) / math.sqrt(values.size)
    assert ci.n == df + 1 and ci.mean == pytest.approx(values.mean())
    assert ci.half_width / se == pytest.approx(T975[df], rel=1e-6)
    assert ci.low == pytest.approx(ci.mean - ci.half_width)


def test_mean_ci_hand_example_and_level():
    ci = mean_ci([1, 2, 3, 4, 5])  # sd = sqrt(2.5), se = sqrt(0.5)
    assert (ci.low, ci.high) == pytest.approx((3 - 2.776445 * 0.5**0.5, 3 + 2.776445 * 0.5**0.5))
    # 90 % with 1 degree of freedom: tan(0.45 pi).
    wide = mean_ci([0.0, 2.0], level=0.90)
    assert wide.half_width == pytest.approx(math.tan(0.45 * math.pi) * 1.0)


def test_one_value_has_no_ci_and_bad_input_is_refused():
    ci = mean_ci([0.8])
    assert ci.mean == 0.8 and ci.n == 1 and ci.low is None and ci.high is None
    assert ci.half_width is None
    with pytest.raises(ValueError, match="no values"):
        mean_ci([])
    with pytest.raises(ValueError, match="finite"):
        mean_ci([0.5, float("nan")])
    with pytest.raises(ValueError, match="level"):
        mean_ci([1, 2], level=95)


def test_paired_difference_against_the_two_df_closed_form():
    # Differences 0.02, 0.03, 0.01: mean 0.02, sd 0.01, t = 0.02 / (0.01 / sqrt 3) = 2 sqrt 3.
    d = paired_difference([0.80, 0.82, 0.81], [0.78, 0.79, 0.80])
    t = 2 * math.sqrt(3)
    assert d.mean == pytest.approx(0.02) and d.n == 3
    # With 2 degrees of freedom the two-sided p is 1 - t / sqrt(2 + t^2).
    assert d.p == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9)
    assert (d.low, d.high) == pytest.approx(
        (0.02 - T975[2] * 0.01 / 3**0.5, 0.02 + T975[2] * 0.01 / 3**0.5)
    )


def test_paired_difference_edge_cases():
    one = paired_difference([0.9], [0.8])
    assert one.mean == pytest.approx(0.1) and one.p is None and one.low is None
    same = paired_difference([0.75, 0.5], [0.5, 0.25])  # every difference 1/4: no spread
    assert same.p == 0.0 and same.low == 0.25 == same.high
    assert paired_difference([0.5, 0.6], [0.5, 0.6]).p == 1.0
    with pytest.raises(ValueError, match="3 values against 2"):
        paired_difference([1, 2, 3], [1, 2])


@pytest.mark.parametrize(
    ("only_a", "only_b", "expected"),
    [
        (10, 2, "better"),
        (2, 10, "worse"),
        (9, 3, "indistinguishable"),
        (5, 5, "indistinguishable"),
    ],
)
def test_mcnemar_on_classifiers_differing_on_k_examples(only_a, only_b, expected):
    a, b = classifiers(only_a, only_b)
    m = mcnemar_exact(a, b)
    assert (m.only_a, m.only_b, m.n) == (only_a, only_b, a.size)
    assert m.p == pytest.approx(exact_two_sided(only_a, only_a + only_b), rel=1e-12)
    assert verdict(m) == expected


def test_mcnemar_hand_values():
    # 10 vs 2 of 12 discordant: 2 (1 + 12 + 66) / 4096.
    assert mcnemar_exact(*classifiers(10, 2)).p == pytest.approx(158 / 4096)
    # 9 vs 3: 2 (1 + 12 + 66 + 220) / 4096 = 0.146.
    assert mcnemar_exact(*classifiers(9, 3)).p == pytest.approx(598 / 4096)
    # Identical predictions: no discordant pair, no evidence.
    same = mcnemar_exact(*classifiers(0, 0))
    assert same.p == 1.0 and verdict(same) == "indistinguishable"


def test_mcnemar_refuses_mismatched_or_non_boolean_input():
    with pytest.raises(ValueError, match="3 predictions against 2"):
        mcnemar_exact([True, False, True], [True, False])
    with pytest.raises(ValueError, match="booleans"):
        mcnemar_exact([0.3, 1.0], [1, 0])


def test_pooling_sums_discordant_counts_across_seeds():
    # No single seed is significant (p = 0.375, 0.625, 0.25); their pooled 10 vs 2 is (0.039).
    seeds = [mcnemar_exact(*classifiers(a, b)) for a, b in [(4, 1), (3, 1), (3, 0)]]
    assert all(verdict(m) == "indistinguishable" for m in seeds)
    pooled = pooled_mcnemar(seeds)
    assert (pooled.only_a, pooled.only_b, pooled.n) == (10, 2, sum(m.n for m in seeds))
    assert pooled.p == pytest.approx(158 / 4096) and verdict(pooled) == "better"
    with pytest.raises(ValueError, match="no seeds"):
        pooled_mcnemar([])


def test_verdict_respects_alpha():
    m = McNemar(only_a=10, only_b=2, n=100, p=158 / 4096)  # p = 0.0386
    assert verdict(m, alpha=0.05) == "better"
    assert verdict(m, alpha=0.01) == "indistinguishable"
    with pytest.raises(ValueError, match="alpha"):
        verdict(m, alpha=5)


def per_seed(pairs):
    """{seed: correctness} for a candidate and a baseline from (only_a, only_b) per seed."""
    built = {seed: classifiers(a, b) for seed, (a, b) in enumerate(pairs)}
    return {s: ab[0] for s, ab in built.items()}, {s: ab[1] for s, ab in built.items()}


def test_compare_to_baseline_builds_a_row():
    cand, base = per_seed([(4, 1), (4, 1), (4, 0)])
    row = compare_to_baseline("s2", cand, base)
    assert row.name == "s2" and row.verdict == "better"
    # 54 right of 75, 75 and 74 examples (the third seed has no only-baseline example).
    assert row.accuracy.n == 3
    assert row.accuracy.mean == pytest.approx(np.mean([54 / 75, 54 / 75, 54 / 74]))
    # Baseline right on 51, 51 and 50: differences 3/75, 3/75, 4/74.
    assert row.difference.mean == pytest.approx(np.mean([3 / 75, 3 / 75, 4 / 74]))
    assert (row.mcnemar.only_a, row.mcnemar.only_b) == (12, 2)
    assert row.mcnemar.p == pytest.approx(2 * (1 + 14 + 91) / 2**14)


def test_compare_to_baseline_refuses_unpaired_seeds():
    cand, base = per_seed([(4, 1), (4, 1)])
    del base[1]
    with pytest.raises(ValueError, match=r"s2: seeds \[0, 1\] do not match"):
        compare_to_baseline("s2", cand, base)


def row(name, only_a, only_b, seeds=2):
    cand, base = per_seed([(only_a, only_b)] * seeds)
    return compare_to_baseline(name, cand, base)


def test_headline_names_a_winner_only_when_the_test_supports_it():
    rows = [row("s1", 0, 0), row("s2", 6, 1), row("s4", 3, 3)]  # s2 pooled 12 vs 2: p = 0.013
    text = headline(rows, baseline="s1")
    assert text.startswith("s2 is better than the baseline s1") and "p = 0.013 < 0.05" in text
    assert "s4" not in text


def test_headline_without_a_supported_winner():
    # s2 has the higher mean but 4 vs 1 per seed pools to 8 vs 2: p = 0.11, not a winner.
    rows = [row("s1", 0, 0), row("s2", 4, 1), row("s4", 2, 3)]
    assert rows[1].difference.mean > 0 and rows[1].verdict == "indistinguishable"
    assert headline(rows, baseline="s1") == (
        "No configuration is distinguishable from the baseline s1 at this budget "
        "(pooled McNemar, alpha = 0.05)."
    )
    worse = headline([row("s1", 0, 0), row("s8", 1, 7)], baseline="s1")
    assert worse.startswith("No configuration is better") and worse.endswith("worse than it: s8.")


def test_headline_with_several_winners_ranks_none_above_the_rest():
    text = headline([row("s2", 6, 1), row("s4", 8, 0)], baseline="s1")
    assert text.startswith("s4 is better") and "(not tested against each other): s2." in text
