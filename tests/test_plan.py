"""The budget planner on runs drawn from a known power law: it recovers the law's
parameters and the true best (S, width), and refuses to fit too few configurations."""

from __future__ import annotations

import numpy as np
import pytest

from dnc.config import ConfigError
from pipelines.search.plan import Candidate, Run, check_enough, fit_law, law, plan

TRUE = (0.30, 0.80, 0.60, 0.12)  # a, b, alpha, c


def _macs(split: int, width: float) -> int:
    # a conv net's MACs grow with width squared; a member has width / sqrt(S)
    return int(split * 1e4 * (width / np.sqrt(split)) ** 2)


def _runs(noise: float = 0.0, seeds: int = 1) -> list[Run]:
    rng = np.random.default_rng(0)
    runs = []
    for s in (1, 2, 4, 8):
        for w in (8, 16, 32):
            m = _macs(s, w) / s
            y = float(law(TRUE, np.array([s]), np.array([m]))[0])
            runs += [Run(s, m, y + noise * rng.standard_normal()) for _ in range(seeds)]
    return runs


def test_fit_recovers_the_law_from_noiseless_runs() -> None:
    theta = fit_law(_runs())
    assert theta == pytest.approx(TRUE, rel=1e-3)


def test_plan_finds_the_true_best_configuration() -> None:
    grid = [(s, w) for s in (1, 2, 4, 8) for w in range(8, 65, 4)]
    candidates = [Candidate(s, float(w), _macs(s, w)) for s, w in grid]
    budget = 4e6
    # oracle: the true law evaluated at every candidate within the budget, by brute force
    fitting = [c for c in candidates if c.macs <= budget]

    def true_loss(c: Candidate) -> float:
        return float(law(TRUE, np.array([c.split]), np.array([c.member_macs]))[0])

    truth = min(fitting, key=true_loss)
    result = plan(_runs(noise=0.002, seeds=2), candidates, budget, "synthetic", boots=50)
    assert (result["best"]["split"], result["best"]["width"]) == (truth.split, truth.width)
    assert result["best"]["macs"] <= budget
    low, high = result["band"]
    assert low <= result["best"]["pred"] <= high
    assert result["loco_mae"] < 0.01  # unseen configurations predicted within the noise
    assert result["law"]["alpha"] == pytest.approx(TRUE[2], abs=0.1)


def test_too_few_configurations_are_refused_in_one_line() -> None:
    runs = [r for r in _runs() if r.split in (1, 2)][:4]
    with pytest.raises(ConfigError, match="4 distinct .* at least 5"):
        check_enough(runs, "synthetic")


def test_search_slots_start_with_the_planner_proposals() -> None:
    import optuna

    from pipelines.search.space import load_search
    from pipelines.search.study import reserve

    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    _, search = load_search(root / "params.yaml", {"search.n_trials": 4})
    study = optuna.create_study(direction="maximize")
    seeds = [{"split.factor": 4, "model.width": 32}, {"split.factor": 2, "model.width": 24}]
    assert reserve(study, search, seeds) == 4
    waiting = study.get_trials(deepcopy=False)
    assert [t.system_attrs.get("fixed_params") for t in waiting[:2]] == seeds
    assert all(not t.system_attrs.get("fixed_params") for t in waiting[2:])  # TPE's slots


def test_plan_command_refuses_too_few_configurations(tmp_path, capsys) -> None:
    import json

    from pipelines.cli import main

    for split in (1, 2):  # two configurations: far too few for a 4-parameter law
        metrics = {"config": {"split_factor": split}, "ensemble": {"nll": 0.5, "acc": 80.0},
                   "members": [{"macs": 1_000_000 // split}]}  # fmt: skip
        (tmp_path / f"s{split}.json").write_text(json.dumps(metrics))
    assert main(["plan", "--runs", str(tmp_path), "--budget-macs", "1e7"]) == 2
    err = capsys.readouterr().err.strip()
    assert "2 distinct" in err and "at least 5" in err and "\n" not in err
