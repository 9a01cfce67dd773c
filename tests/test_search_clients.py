"""The search as the Optuna clients see it: overrides, the budget pre-check, study attrs."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import ROOT, TINY

from dnc.config import ConfigError
from dnc.config_loading import apply_overrides, load_params
from pipelines.cli import main
from pipelines.search.space import inference_cost, load_search
from pipelines.search.study import FINGERPRINT, open_study

SPACE = {
    "split.factor": {"choices": [1, 2]},
    "model.width": {"low": 8, "high": 16, "step": 8},
}


def write_params(folder: Path, **search: object) -> Path:
    tree = apply_overrides(
        yaml.safe_load((ROOT / "params.yaml").read_text()), {**TINY, "train.epochs": 1}
    )
    tree["search"].update(
        {"n_trials": 2, "storage": f"sqlite:///{folder}/optuna.db", "space": SPACE, **search}
    )
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


@pytest.fixture(autouse=True)
def _tracking_off(monkeypatch):
    monkeypatch.setenv("DNC_TRACKING", "off")


def test_nested_space_key_overrides_a_whole_dimension(tmp_path):
    path = write_params(tmp_path)
    _, search = load_search(path, {"search.space.model.width": {"low": 8, "high": 32, "step": 8}})
    assert search.space["model.width"].grid() == [8, 16, 24, 32]
    _, search = load_search(path, {"search.space.model.width.high": 24})
    assert search.space["model.width"].grid() == [8, 16, 24]
    # A new searched key is a mapping like any dimension; a bare value names what it missed.
    _, search = load_search(path, {"search.space.train.lr": {"low": 0.01, "high": 0.1}})
    assert search.space["train.lr"].high == 0.1
    with pytest.raises(ConfigError, match=r"^search\.space\.train\.lr: unknown key"):
        load_search(path, {"search.space.train.lr": 0.1})


def test_nested_override_through_the_cli(tmp_path, capsys):
    """The CLI's `--set` parses the flow-style mapping like any YAML value."""
    write_params(tmp_path)
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        code = main(
            [
                "search",
                "--study",
                "w",
                "--set",
                "search.space.model.width={low: 8, high: 32, step: 8}",
                "--budget-flops",
                "1",
            ]
        )
    finally:
        os.chdir(cwd)
    # It got past the override to the budget pre-check (which fails: 1 MAC fits nothing).
    assert code == 2
    assert capsys.readouterr().err.startswith("error: search.budget:")


def test_study_with_nothing_in_budget_fails_before_it_starts(tmp_path, capsys):
    """Exit 2, one line naming the budget and the cheapest candidate's cost, no study, no
    data, no run dir. The cheapest is found by brute force over the candidates (oracle)."""
    path = write_params(tmp_path)
    base = load_params(path)
    costs = [
        inference_cost(base.with_overrides({"split.factor": s, "model.width": w}))
        for s in (1, 2)
        for w in (8, 16)
    ]
    cheapest = min(costs)
    budget = cheapest[0] - 1
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        code = main(["search", "--study", "nothing", "--budget-flops", str(budget)])
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"fits {budget:,} MACs" in err
    assert f"cheapest costs {cheapest[0]:,} MACs and {cheapest[1]:,} parameters" in err
    for left in ("optuna.db", "data", "runs", "models"):
        assert not (tmp_path / left).exists(), left


def test_study_attrs_are_short_and_objectives_named(tmp_path):
    """`optuna studies` shows user attrs: the fingerprint is a short hash there; a changed
    fixed key is still named (full text kept as a system attr); objectives are labelled."""
    path = write_params(tmp_path, mode="multi", sampler="nsga2")
    base, search = load_search(path)
    open_study("attrs", base, search, lambda s: None)
    loaded = optuna.load_study(study_name="attrs", storage=search.storage)
    assert len(loaded.user_attrs[FINGERPRINT]) == 16
    assert len(repr(loaded.user_attrs)) < 200
    assert loaded.metric_names == ["val_acc", "inference_macs"]
    again = open_study("attrs", base, search, lambda s: None)  # the same study: fine
    assert again.load().user_attrs[FINGERPRINT] == loaded.user_attrs[FINGERPRINT]
    changed, _ = load_search(path, {"train.lr": base.train.lr * 2})
    with pytest.raises(ConfigError, match=r"^train\.lr: study 'attrs' was created with"):
        open_study("attrs", changed, search, lambda s: None)
