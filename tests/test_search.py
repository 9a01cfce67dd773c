"""Optuna search: budgets, modes, parallel workers, resume, divergence, tracking (digits)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from conftest import ROOT, SEARCH, TINY

from dnc.config_loading import apply_overrides, load_params
from dnc.train.callbacks import FitResult, TrainState
from pipelines.cli import main
from pipelines.search.space import inference_cost, load_search
from pipelines.search.study import final_trials

# Trials of about a second: 1 epoch on 512 digits images, members of width <= 8.
TRIAL = {**TINY, "train.epochs": 1, "data.train_size": 512}


def write_params(folder: Path, train: dict | None = None, **search: object) -> Path:
    """The committed params.yaml with the tiny training overrides and a small search."""
    tree = yaml.safe_load((ROOT / "params.yaml").read_text())
    tree = apply_overrides(tree, {**TRIAL, **(train or {})})
    tree["search"].update({**SEARCH, **search})
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def search(folder: Path, study: str, *args: str) -> int:
    """`python -m pipelines search` in-process, in `folder`."""
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        return main(["search", "--study", study, "--params", "params.yaml", *args])
    finally:
        os.chdir(cwd)


def worker(folder: Path, study: str, *args: str) -> subprocess.Popen:
    """The same command as a separate worker process."""
    env = {**os.environ, "DNC_TRACKING": "off", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "pipelines",
        "search",
        "--study",
        study,
        "--params",
        "params.yaml",
    ]
    return subprocess.Popen(
        [*cmd, *args], cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def load(folder: Path, study: str, url: str = "sqlite:///optuna.db") -> optuna.Study:
    url = url.replace("sqlite:///", f"sqlite:///{folder}/") if url.startswith("sqlite") else url
    return optuna.load_study(study_name=study, storage=url)


def assert_exact(study: optuna.Study, n_trials: int) -> list[optuna.trial.FrozenTrial]:
    """Every slot 0..n-1 finished exactly once; nothing waiting or running; no extra trial."""
    trials = study.get_trials()
    final = final_trials(trials)
    assert sorted(t.user_attrs["trial"] for t in final) == list(range(n_trials))
    assert not [t for t in trials if t.state.name in ("WAITING", "RUNNING")]
    fresh = [t for t in trials if "failed_trial" not in t.system_attrs]
    assert len(fresh) == n_trials
    return final


@pytest.fixture(autouse=True)
def _tracking_off_one_thread(monkeypatch):
    # One torch thread: on a loaded 2-core machine two threads made an epoch ~10x slower.
    monkeypatch.setenv("DNC_TRACKING", "off")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_committed_search_section_is_valid():
    base, cfg = load_search(ROOT / "params.yaml")
    assert set(cfg.space) >= {"split.factor", "model.width", "train.cot_weight"}
    assert cfg.space["model.width"].is_int and not cfg.space["train.cot_weight"].is_int


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["--set", "search.mode=both"], "search.mode"),
        (["--set", "search.space.train.lrr={low: 0.1, high: 1.0}"], "search.space.train.lrr"),
        (["--set", "search.space.model.width.low=-4"], "search.space.model.width"),
        (["--set", "search.grace_period=1"], "search.grace_period"),
        (["--budget-flops", "1000"], "search.budget"),
        (["--set", "search.storage=mysql://x/y"], "search.storage"),
        (["--storage", "not a url"], "search.storage"),
        (["--set", "train.lr=-1"], "train.lr"),
    ],
)
def test_bad_input_exits_2_naming_the_key(tmp_path, capsys, args, key):
    write_params(tmp_path)
    assert search(tmp_path, "bad", *args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {key}") and "\n" not in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


@pytest.mark.slow
def test_budget_rejects_before_training(tmp_path, monkeypatch):
    """Over-budget configurations never reach `runner.train` and leave no run dir."""
    calls: list[dict] = []

    def fake_train(params, data_dir, out_dir, **kwargs):
        calls.append({"width": params.model.width, "split": params.split.factor})
        Path(out_dir).mkdir(parents=True)
        return FitResult(TrainState(epoch=0, best_value=50.0, best_epoch=0), out_dir, out_dir, -1)

    monkeypatch.setattr("pipelines.search.objective.runner.train", fake_train)
    space = {"split.factor": {"choices": [1, 2]}, "model.width": {"choices": [4, 16]}}
    write_params(tmp_path, sampler="grid", n_trials=4, space=space)
    base = load_params(tmp_path / "params.yaml")
    cost = {
        (s, w): inference_cost(base.with_overrides({"split.factor": s, "model.width": w}))[0]
        for s in (1, 2)
        for w in (4, 16)
    }
    budget = max(cost[1, 4], cost[2, 4])  # width 4 fits, width 16 does not
    assert search(tmp_path, "budget", "--budget-flops", str(budget)) == 0

    final = final_trials(load(tmp_path, "budget").get_trials())
    rejected = [t for t in final if "rejected" in t.user_attrs]
    assert sorted(t.params["model.width"] for t in rejected) == [16, 16]
    assert all(
        t.state.name == "PRUNED" and "> budget" in t.user_attrs["rejected"] for t in rejected
    )
    assert sorted(c["width"] for c in calls) == [4, 4]
    for t in rejected:
        assert not (tmp_path / "runs/search/budget" / f"trial_{t.user_attrs['trial']}").exists()
    summary = json.loads((tmp_path / "reports/search/budget/summary.json").read_text())
    assert summary["counts"]["rejected"] == 2 and summary["budget"]["inference"]["macs"] == budget


@pytest.mark.slow
def test_single_objective_study_is_reproducible(tmp_path):
    """A single-objective study completes; a re-run of the same study name in a fresh store
    samples the same parameters and trains to the same accuracies (seeds from name+number)."""
    runs = []
    for copy in ("a", "b"):
        folder = tmp_path / copy
        folder.mkdir()
        write_params(folder, pruner="hyperband")
        assert search(folder, "single") == 0
        final = assert_exact(load(folder, "single"), 3)
        runs.append([(t.params, t.value) for t in sorted(final, key=lambda t: t.number)])
    assert runs[0] == runs[1]

    folder = tmp_path / "a"
    summary = json.loads((folder / "reports/search/single/summary.json").read_text())
    assert summary["counts"]["complete"] == 3 and len(summary["best"]) == 1
    best_txt = (folder / "reports/search/single/best.txt").read_text()
    command = next(line for line in best_txt.splitlines() if line.startswith("dvc exp run"))
    overrides = dict(arg.split("=", 1) for arg in shlex.split(command)[4::2])
    assert set(overrides) == {"split.factor", "model.width", "train.cot_weight"}
    best = summary["best"][0]["overrides"]
    assert {k: yaml.safe_load(v) for k, v in overrides.items()} == best
    assert (folder / "reports/search/single/accuracy_vs_macs.png").stat().st_size > 0
    assert "| trial |" in (folder / "reports/search/single/trials.md").read_text()


@pytest.mark.slow
def test_multi_objective_study_gives_a_pareto_front(tmp_path):
    write_params(tmp_path, mode="multi", sampler="nsga2")
    assert search(tmp_path, "multi") == 0
    study = load(tmp_path, "multi")
    assert_exact(study, 3)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    front = study.best_trials
    assert front and all(t.values[1] == t.user_attrs["macs"] for t in front)
    summary = json.loads((tmp_path / "reports/search/multi/summary.json").read_text())
    assert [b["trial"] for b in summary["best"]] == [
        t.user_attrs["trial"] for t in sorted(front, key=lambda t: (t.values[1], -t.values[0]))
    ]
    best_txt = (tmp_path / "reports/search/multi/best.txt").read_text()
    assert best_txt.count("dvc exp run") == len(front)


@pytest.mark.slow
def test_diverging_trial_is_stopped_and_the_study_goes_on(tmp_path):
    space = {"train.lr": {"choices": [0.05, 1.0e12]}, "split.factor": {"choices": [2]}}
    write_params(tmp_path, sampler="grid", n_trials=2, space=space)
    assert search(tmp_path, "nan") == 0
    final = {t.params["train.lr"]: t for t in final_trials(load(tmp_path, "nan").get_trials())}
    assert final[1.0e12].state.name == "PRUNED"
    assert "loss is" in final[1.0e12].user_attrs["diverged"]
    assert final[0.05].state.name == "COMPLETE"


@pytest.mark.slow
def test_killed_worker_is_retried_and_resumed(tmp_path):
    """SIGKILL mid-trial: a restarted worker fails the stale trial after the heartbeat grace
    period, runs its retry from the trial's checkpoint and completes the study."""
    write_params(tmp_path, {"train.epochs": 5}, n_trials=2, pruner="none")
    first = worker(tmp_path, "kill")
    checkpoint = tmp_path / "runs/search/kill/trial_0/last.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert first.poll() is None, first.communicate()[0].decode()
    first.send_signal(signal.SIGKILL)
    first.wait()

    second = worker(tmp_path, "kill")
    out = second.communicate(timeout=240)[0].decode()
    assert second.returncode == 0, out
    study = load(tmp_path, "kill")
    final = assert_exact(study, 2)
    stale = [t for t in study.get_trials() if t.number not in {f.number for f in final}]
    assert [t.state.name for t in stale] == ["FAIL"]
    retry = next(t for t in final if t.system_attrs.get("failed_trial") == stale[0].number)
    assert retry.state.name == "COMPLETE" and retry.params == stale[0].params
    assert retry.user_attrs["resumed_from_epoch"] >= 0  # continued from the checkpoint


@pytest.mark.slow
def test_trials_are_nested_mlflow_runs(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("DNC_TRACKING", "on")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("DNC_ARTIFACT_ROOT", str(tmp_path / "mlartifacts"))
    write_params(tmp_path, n_trials=2)
    assert search(tmp_path, "tracked") == 0

    study = load(tmp_path, "tracked")
    parent_id = study.user_attrs["mlflow_parent_run_id"]
    client = MlflowClient(uri)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["dnc.study"] == "tracked"
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    by_id = {run.info.run_id: run for run in children}
    assert sorted(by_id) == sorted(t.user_attrs["mlflow_run_id"] for t in study.trials)
    for trial in study.trials:
        run = by_id[trial.user_attrs["mlflow_run_id"]]
        assert run.data.tags["dnc.entry_point"] == "optuna"
        assert run.data.params["split.factor"] == str(trial.params["split.factor"])
    artifacts = {a.path for a in client.list_artifacts(parent_id, "search")}
    assert "search/best.txt" in artifacts


def test_prefect_flow_takes_the_cli_options():
    from pipelines.search.flow import search_flow

    assert search_flow.name == "dnc-search"
    names = set(search_flow.parameters.properties)
    assert names >= {"study", "n_trials", "budget_flops", "budget_train", "mode", "storage"}
    assert names >= {"params_path", "overrides"}  # as the other flows


def test_storage_bug_is_not_reported_as_a_bad_setting(monkeypatch):
    """Only a wrong or unreachable URL is `search.storage`'s fault; another error surfaces."""
    from pipelines.search import storage

    _, cfg = load_search(ROOT / "params.yaml")

    def broken(*args, **kwargs):
        raise RuntimeError("bug in a storage plugin")

    monkeypatch.setattr(storage, "RDBStorage", broken)
    with pytest.raises(RuntimeError, match="bug in a storage plugin"):
        storage.open_storage(cfg)
