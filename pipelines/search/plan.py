"""The budget planner: from a few finished runs, predict the best (S, width) for a budget.

Model (after Lobacheva et al., NeurIPS 2020, "On Power Laws in Deep Ensembles"): the loss
of an ensemble of S members of m MACs each is a power law in member size plus an
ensemble term,

    y(S, m) = a + b * (m / 1e6) ** (-alpha) + c / S,    b, c >= 0, 0 < alpha <= 3,

fitted by least squares (scipy.optimize.least_squares) to test NLL, or to the error rate
(100 - accuracy) where NLL is not recorded (an Optuna study keeps validation accuracy).
For a budget of B MACs per image the plan scores every candidate (S, model.width) whose
real MACs (counted by dnc, as the search does) fit B and names the lowest predicted loss.
Honesty: the band is a bootstrap over configurations (refit on resampled ones); the
leave-one-configuration-out error says how well an unseen configuration is predicted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from dnc.config import ConfigError

N_PARAMS = 4  # a, b, alpha, c
MIN_CONFIGS = N_PARAMS + 1
SCALE = 1e6  # member MACs in millions keeps the fit well conditioned


@dataclass(frozen=True)
class Run:
    """One finished run: S members of `member_macs` each, and its loss `y`."""

    split: int
    member_macs: float
    y: float

    @property
    def config(self) -> tuple[int, int]:
        return (self.split, round(self.member_macs))


def law(theta: Sequence[float], split: np.ndarray, member_macs: np.ndarray) -> np.ndarray:
    """y(S, m) = a + b * (m / 1e6) ** -alpha + c / S."""
    a, b, alpha, c = theta
    return a + b * (member_macs / SCALE) ** (-alpha) + c / split


def fit_law(runs: Sequence[Run]) -> np.ndarray:
    """Least-squares (a, b, alpha, c), best of a few starts (the fit is not convex)."""
    s = np.array([r.split for r in runs], float)
    m = np.array([r.member_macs for r in runs], float)
    y = np.array([r.y for r in runs], float)
    lower, upper = [-np.inf, 0.0, 1e-3, 0.0], [np.inf, np.inf, 3.0, np.inf]
    best = None
    for alpha0 in (0.25, 0.5, 1.0, 2.0):
        start = [float(y.min()), float(np.ptp(y)) + 1e-3, alpha0, float(np.ptp(y)) + 1e-3]
        res = least_squares(
            lambda t: law(t, s, m) - y, start, bounds=(lower, upper), x_scale="jac"
        )
        if best is None or res.cost < best.cost:
            best = res
    assert best is not None
    return best.x


def distinct_configs(runs: Sequence[Run]) -> list[tuple[int, int]]:
    """The distinct (S, member MACs) of `runs`, in first-seen order."""
    return list(dict.fromkeys(r.config for r in runs))


def check_enough(runs: Sequence[Run], source: str) -> None:
    """ConfigError (one line) when `runs` have too few configurations to fit the law."""
    n = len(distinct_configs(runs))
    if n < MIN_CONFIGS:
        raise ConfigError(
            f"plan: {source} has {n} distinct (S, member MACs) configurations; the "
            f"{N_PARAMS}-parameter law needs at least {MIN_CONFIGS}"
        )


def leave_one_config_out(runs: Sequence[Run]) -> list[dict]:
    """Per configuration: its mean loss, and the law's prediction when fitted without it."""
    out = []
    for config in distinct_configs(runs):
        held = [r for r in runs if r.config == config]
        theta = fit_law([r for r in runs if r.config != config])
        pred = float(law(theta, np.array([config[0]]), np.array([config[1]], float))[0])
        actual = float(np.mean([r.y for r in held]))
        out.append({"split": config[0], "member_macs": config[1], "y": actual, "pred": pred})
    return out


@dataclass(frozen=True)
class Candidate:
    """A configuration one could train: S, the undivided width and its real MACs."""

    split: int
    width: float
    macs: int  # all S members together

    @property
    def member_macs(self) -> float:
        return self.macs / self.split


def rank(theta: np.ndarray, candidates: Sequence[Candidate]) -> list[tuple[float, Candidate]]:
    """Candidates with their predicted loss, best first."""
    s = np.array([c.split for c in candidates], float)
    m = np.array([c.member_macs for c in candidates], float)
    pred = law(theta, s, m)
    return sorted(zip(pred.tolist(), candidates, strict=True), key=lambda t: t[0])


def plan(
    runs: Sequence[Run],
    candidates: Sequence[Candidate],
    budget_macs: float,
    source: str,
    boots: int = 200,
    seed: int = 0,
) -> dict:
    """The fitted law, the best candidate within `budget_macs` with a bootstrap band, the
    runner-up proposals and the leave-one-configuration-out error."""
    check_enough(runs, source)
    fitting = [c for c in candidates if c.macs <= budget_macs]
    if not fitting:
        cheapest = min(c.macs for c in candidates)
        raise ConfigError(
            f"--budget-macs {budget_macs:g}: no candidate fits (cheapest {cheapest} MACs)"
        )
    theta = fit_law(runs)
    ranked = rank(theta, fitting)
    best_pred, best = ranked[0]
    rng = np.random.default_rng(seed)
    configs = distinct_configs(runs)
    picks: dict[tuple[int, float], int] = {}
    preds = []
    tops: dict[tuple[int, ...], tuple[float, Candidate]] = {}  # a resample's multiset -> top
    for _ in range(boots):  # resample whole configurations: seeds of one are not independent
        chosen = rng.choice(len(configs), len(configs), replace=True)
        key = tuple(sorted(chosen.tolist()))  # the fit depends on the multiset, not the order
        if len(set(key)) < N_PARAMS:
            continue
        if key not in tops:
            sample = [r for i in key for r in runs if r.config == configs[i]]
            tops[key] = rank(fit_law(sample), fitting)[0]
        top_pred, top = tops[key]
        picks[(top.split, top.width)] = picks.get((top.split, top.width), 0) + 1
        preds.append(top_pred)
    loco = leave_one_config_out(runs)
    errors = [abs(row["pred"] - row["y"]) for row in loco]
    return {
        "law": dict(zip(("a", "b", "alpha", "c"), map(float, theta), strict=True)),
        "budget_macs": budget_macs,
        "best": {"split": best.split, "width": best.width, "macs": best.macs, "pred": best_pred},
        "band": [float(np.percentile(preds, q)) for q in (5, 95)] if preds else None,
        "bootstrap_picks": {f"S={s} width={w:g}": n for (s, w), n in sorted(picks.items())},
        "proposals": [
            {"split": c.split, "width": c.width, "macs": c.macs, "pred": p} for p, c in ranked[:5]
        ],
        "loco": loco,
        "loco_mae": float(np.mean(errors)),
        "n_runs": len(runs),
        "n_configs": len(configs),
    }


def runs_from_metrics(folder: Path, target: str) -> list[Run]:
    """Runs from the evaluate stage's metrics JSONs (SplitNet runs; others are skipped)."""
    files = sorted(Path(folder).rglob("*.json"))  # reports/evaluate/<config>/seed<k>.json
    if not files:
        raise ConfigError(f"--runs {folder}: no metrics JSON files")
    runs = []
    for f in files:
        d = json.loads(f.read_text())
        split = (d.get("config") or {}).get("split_factor")
        ens, members = d.get("ensemble") or {}, d.get("members") or [{}]
        y = ens.get("nll") if target == "nll" else 100.0 - ens.get("acc", 100.0)
        if not split or y is None or "macs" not in members[0]:
            continue  # not a SplitNet run, or not an evaluate metrics file
        runs.append(Run(int(split), float(members[0]["macs"]), float(y)))
    return runs


def runs_from_study(study: str, storage: str) -> list[Run]:
    """Runs from an Optuna study's complete trials: validation error (100 - val acc)."""
    import optuna  # only this source needs it

    loaded = optuna.load_study(study_name=study, storage=storage)
    runs = []
    for t in loaded.get_trials(deepcopy=False):
        if t.state.name != "COMPLETE" or "macs" not in t.user_attrs:
            continue
        split = int(t.params.get("split.factor", 1))
        value = t.values[0] if t.values else t.value
        runs.append(Run(split, t.user_attrs["macs"] / split, 100.0 - float(value)))
    return runs


def candidates_of(
    splits: Sequence[int], widths: Sequence[float], cost: Callable[[int, float], int]
) -> list[Candidate]:
    """Every (S, width) with its real MACs from `cost` (dnc's counter, on the meta device)."""
    return [Candidate(s, float(w), int(cost(s, w))) for s in splits for w in widths]
