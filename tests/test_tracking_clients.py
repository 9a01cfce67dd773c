"""MLflow as its clients show it: one plot line per configuration, runs told apart by name
and tags, resolved params. Uses a throwaway SQLite store; nothing is trained."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnc.train.callbacks import TrainState


@pytest.fixture()
def store(tmp_path, monkeypatch, sqlite_tracking_uri):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_tracking_uri)
    monkeypatch.setenv("DNC_ARTIFACT_ROOT", str(tmp_path / "mlartifacts"))
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "clients")
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    from pipelines.tracking.store import Store

    return Store.connect()


def log_run(store, name: str, params: dict[str, str], acc: list[float], macs: list[float]):
    """A finished run as `evaluate` leaves it: k-of-S prefix points and the ensemble."""
    run_id = store.client.create_run(store.experiment_id(), run_name=name).info.run_id
    metrics = {"test/ensemble/acc": acc[-1], "test/ensemble/macs": macs[-1]}
    for k, (a, m) in enumerate(zip(acc, macs, strict=True), start=1):
        metrics |= {f"test/k_{k}/acc": a, f"test/k_{k}/macs": m}
    store.log(run_id, epochs={0: metrics}, params=params)
    store.end(run_id)


def test_compare_draws_one_line_per_configuration(store):
    """Six runs, three configurations x two seeds; the two S=1 configurations share a run
    name. Expected curves and their means are written out by hand."""
    from pipelines.tracking.compare import collect_rows, plot_rows

    def params(s: int, w: int, seed: int) -> dict[str, str]:
        return {"split.factor": str(s), "model.width": str(w), "seed": str(seed), "x": "same"}

    log_run(store, "small_cnn-S1-digits", params(1, 16, 0), [80.0], [100.0])
    log_run(store, "small_cnn-S1-digits", params(1, 16, 1), [82.0], [100.0])
    log_run(store, "small_cnn-S1-digits", params(1, 32, 0), [90.0], [400.0])
    log_run(store, "small_cnn-S1-digits", params(1, 32, 1), [92.0], [400.0])
    log_run(store, "small_cnn-S2-digits", params(2, 32, 0), [70.0, 88.0], [200.0, 400.0])
    log_run(store, "small_cnn-S2-digits", params(2, 32, 1), [74.0, 90.0], [200.0, 400.0])

    points = plot_rows(collect_rows("clients"))
    curves: dict[str, list[tuple[str, float, float]]] = {}
    for p in points:
        curves.setdefault(p["curve"], []).append((p["label"], p["acc"], p["macs"]))
    assert curves == {
        "model.width=16, split.factor=1 (mean of 2 runs)": [("k=1", 81.0, 100.0)],
        "model.width=32, split.factor=1 (mean of 2 runs)": [("k=1", 91.0, 400.0)],
        "model.width=32, split.factor=2 (mean of 2 runs)": [
            ("k=1", 72.0, 200.0),
            ("k=2", 89.0, 400.0),
        ],
    }


@pytest.mark.integration
def test_run_name_and_tags_say_which_run_is_which(store, tiny_params, tmp_path, monkeypatch):
    """Configuration, seed, entry point and DVC experiment in the run's name and tags; a
    default-width model logs its width (small_cnn's own: 32), not null."""
    from pipelines.tracking.mlflow_run import TrainingRun

    monkeypatch.setenv("DVC_EXP_NAME", "bushy-kite")
    params = tiny_params.with_overrides({"model.width": None, "split.factor": 4, "seed": 3})
    run = TrainingRun(store, params, tmp_path / "run", None, entry_point="dvc", config="s4")
    (tmp_path / "run").mkdir()
    run.on_fit_start(TrainState())
    logged = store.client.get_run(run.run_id)
    assert logged.info.run_name == "bushy-kite/s4-seed3 small_cnn-S4-digits"
    tags = logged.data.tags
    assert tags["dnc.config"] == "s4" and tags["dnc.seed"] == "3"
    assert tags["dnc.entry_point"] == "dvc" and tags["dnc.dvc.experiment"] == "bushy-kite"
    assert logged.data.params["model.width"] == "32.0" and logged.data.params["seed"] == "3"
    # The same params continue the same run (the resolved width is compared consistently).
    assert store.can_continue(run.run_id, params)
    run.fail(RuntimeError("test over"))


def test_default_run_name_has_the_seed(store, tiny_params):
    from pipelines.tracking.schema import run_name

    assert run_name(tiny_params.with_overrides({"seed": 5})) == "small_cnn-S2-digits-seed5"


def test_ui_command_line_is_the_light_server(tmp_path):
    from pipelines.tracking.ui import server_command

    cmd, env = server_command("sqlite:///mlflow.db", port=5001, artifacts=Path("mlartifacts"))
    assert cmd[1:4] == ["-m", "mlflow", "server"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--workers") + 1] == "1"
    assert cmd[cmd.index("--backend-store-uri") + 1] == "sqlite:///mlflow.db"
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    # That it serves, on 127.0.0.1: test_tracking.py's REST test runs against this command.
