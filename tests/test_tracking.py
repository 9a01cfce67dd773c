"""MLflow tracking: one run per trained model, with the full schema, in a real store.

One tiny co-training (digits) is killed after epoch 0, resumed through the DVC stage
command, then evaluated through it: the run must end KILLED, be continued (same id) and end
FINISHED with params, per-epoch and final metrics, tags, artifacts and a reloadable model.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from servers import free_port, start, stop, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "test-tracking"
EPOCH_KEYS = [
    "epoch",
    "train/loss",
    "train/ce_0",
    "train/ce_1",
    "train/js",
    "train/cot_weight",
    "train/lr",
    "val/ensemble/acc",
    "val/ensemble/nll",
    "val/member_0/acc",
    "val/member_1/acc",
    "val/member_1/nll",
]
FINAL_KEYS = [
    "test/ensemble/acc",
    "test/ensemble/nll",
    "test/ensemble/params",
    "test/ensemble/macs",
    "test/ensemble/latency_ms/b1",
    "test/member_0/acc",
    "test/member_1/macs",
    "test/k_1/acc",
    "test/k_2/acc",
    "test/k_1/macs",
    "best/epoch",
]


class StopAfter:
    """Interrupts the training (as Ctrl-C would) after epoch `n` was checkpointed."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_epoch_end(self, state, metrics):
        if state.epoch == self.n:
            raise KeyboardInterrupt


def store_env(mp: pytest.MonkeyPatch, uri: str, tmp: Path) -> None:
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    mp.setenv("DNC_ARTIFACT_ROOT", str(tmp / "mlartifacts"))
    mp.setenv("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mp.delenv("DNC_TRACKING", raising=False)


def run_pipeline(params, tmp: Path, kill_after: int | None = None) -> dict:
    """Train (optionally killed, then resumed) and evaluate through the stage CLI."""
    from pipelines.cli import main
    from pipelines.tracking import mlflow_run as tracking
    from pipelines.tracking import runner

    params_file, run_dir = tmp / "params.yaml", tmp / "models"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    out = {"run_dir": run_dir, "metrics": tmp / "reports" / "metrics.json"}
    client = tracking.Store().client
    uri = os.environ["MLFLOW_TRACKING_URI"]
    if kill_after is not None:
        with pytest.raises(KeyboardInterrupt):
            runner.train(params, None, run_dir, entry_point="cli", callbacks=[StopAfter(0)])
        out["killed_id"] = tracking.run_id_of(run_dir)
        out["killed_status"] = client.get_run(out["killed_id"]).info.status
    cli = ["--params", str(params_file), "--set", "train.progress=false"]
    assert main(["stage", "train", *cli, "--out", str(run_dir)]) == 0
    out["run_id"] = tracking.run_id_of(run_dir)
    out["metrics"].parent.mkdir(parents=True)
    (out["metrics"].parent / "confusion.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    assert (
        main(
            ["stage", "evaluate", *cli, "--model-dir", str(run_dir), "--out", str(out["metrics"])]
        )
        == 0
    )
    assert os.environ["MLFLOW_TRACKING_URI"] == uri  # logging the model kept it
    return out


def assert_full_schema(client, run_id: str, params, run_dir: Path) -> None:
    """Params, per-epoch and final metrics, tags, artifacts and model of a finished run."""
    from dnc.io import sha256_file
    from pipelines.tracking.schema import param_strings

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == param_strings(params)
    assert run.data.params["split.factor"] == "2"
    for key in EPOCH_KEYS:
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert sorted(steps) == [0, 1], key  # each epoch once, also across the resume
    assert set(FINAL_KEYS) <= set(run.data.metrics), set(FINAL_KEYS) - set(run.data.metrics)
    tags = run.data.tags
    expected = {"dnc.dataset": "digits", "dnc.model": "small_cnn", "dnc.split_factor": "2"}
    assert expected.items() <= tags.items()
    assert tags["dnc.entry_point"] in ("cli", "dvc") and tags["dnc.eval_entry_point"] == "dvc"
    assert tags["dnc.checkpoint_sha256"] == sha256_file(run_dir / "best.pt")
    assert tags["dnc.git_dirty"] in ("true", "false")
    assert len(tags["mlflow.source.git.commit"]) == 40
    assert tags["dnc.model_uri"].startswith("models:/")
    assert "dnc.stop_reason" not in tags
    files = {
        a.path
        for d in ("config", "metrics", "run", "plots")
        for a in client.list_artifacts(run_id, d)
    }
    assert files == {
        "config/params.yaml",
        "metrics/metrics.json",
        "run/history.json",
        "plots/confusion.png",
    }


def assert_model_predicts_identically(run_id: str, params, run_dir: Path) -> None:
    import mlflow.pytorch
    import torch

    from pipelines.tracking.logged_model import load_classifier

    expected, info = load_classifier(params, run_dir, None)
    loaded = mlflow.pytorch.load_model(f"runs:/{run_id}/model")
    pixels = torch.rand(5, info.in_chans, info.image_size, info.image_size)  # batch != example
    with torch.no_grad():
        assert torch.equal(loaded(pixels), expected(pixels))


@pytest.fixture(scope="module")
def params(default_params):
    from conftest import TINY

    return default_params.with_overrides({**TINY, "data.train_size": 256})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A fresh SQLite store + artifact folder for this module, set in the environment."""
    tmp = tmp_path_factory.mktemp("tracking")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        store_env(mp, uri, tmp)
        yield {"uri": uri, "tmp": tmp}


@pytest.fixture(scope="module")
def tracked(params, store):
    return {**store, **run_pipeline(params, store["tmp"], kill_after=0)}


@pytest.mark.slow
def test_killed_run_ends_killed_and_resume_continues_it(tracked):
    assert tracked["killed_status"] == "KILLED"
    assert tracked["run_id"] == tracked["killed_id"]


@pytest.mark.slow
def test_run_has_full_schema_in_sqlite_store(tracked, params):
    from mlflow import MlflowClient

    client = MlflowClient(tracked["uri"])
    exp = client.get_experiment_by_name(EXPERIMENT)
    found = client.search_runs([exp.experiment_id], "tags.`dnc.model_uri` LIKE 'models:/%'")
    assert tracked["run_id"] in {r.info.run_id for r in found}
    assert_full_schema(client, tracked["run_id"], params, tracked["run_dir"])
    assert (
        Path(exp.artifact_location.removeprefix("file://")).parent
        == tracked["tmp"] / "mlartifacts"
    )


@pytest.mark.slow
def test_logged_model_predicts_identically(tracked, params):
    assert_model_predicts_identically(tracked["run_id"], params, tracked["run_dir"])


def resumed_copy(tracked, name: str) -> Path:
    """A copy of the finished run dir: resuming it trains no epoch (cheap)."""
    copy = tracked["tmp"] / name
    shutil.copytree(tracked["run_dir"], copy)
    return copy


@pytest.mark.slow
def test_changed_params_start_a_new_nested_run_with_history(tracked, params):
    """An Optuna-style trial: nested under a study run; changed params -> a new run."""
    from pipelines.tracking import runner
    from pipelines.tracking.mlflow_run import Store

    store = Store()
    parent = store.client.create_run(store.experiment_id("test-study")).info.run_id
    changed = params.with_overrides({"train.progress": True})
    copy = resumed_copy(tracked, "changed")
    runner.train(
        changed, None, copy, entry_point="optuna", parent_run_id=parent, run_name="trial-0"
    )
    runs = store.client.search_runs(
        [store.experiment_id("test-study")], f"tags.mlflow.parentRunId = '{parent}'"
    )
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    child = runs[0]
    assert child.info.run_name == "trial-0" and child.info.run_id != tracked["run_id"]
    assert child.data.tags["dnc.previous_run_id"] == tracked["run_id"]
    assert child.data.tags["dnc.entry_point"] == "optuna"
    assert child.data.params["train.progress"] == "true"
    assert len(store.client.get_metric_history(child.info.run_id, "train/loss")) == 2


@pytest.mark.slow
def test_compare_prints_table_and_writes_plot(tracked, tmp_path, capsys):
    from pipelines.cli import main

    assert main(["compare", "--experiment", EXPERIMENT, "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "| S |" in printed and "small_cnn-S2-digits" in printed
    written = json.loads((tmp_path / "compare.json").read_text())
    rows = written["runs"]
    row = next(r for r in rows if r["run id"] == tracked["run_id"])
    assert "Against the baseline" in printed or "no verdicts" in printed
    assert row["S"] == "2" and row["method"] == "splitnet"
    assert [p["label"] for p in row["curve"]] == ["splitnet k=1 of S=2", "splitnet k=2 of S=2"]
    assert (tmp_path / "accuracy_vs_macs.png").read_bytes()[:4] == b"\x89PNG"
    assert "small_cnn-S2-digits" in (tmp_path / "compare.md").read_text()
    assert main(["compare", "--experiment", "no-such", "--out", str(tmp_path)]) == 2


@pytest.mark.slow
def test_cooperative_run_logs_depths_and_a_reloadable_model(store, params, tmp_path):
    """Another method's evaluation JSON and served model go through the same schema."""
    from pipelines.tracking import mlflow_run as tracking
    from pipelines.tracking import runner

    coop = params.with_overrides(
        {"method": "cooperative", "train.epochs": 1, "data.test_size": 128}
    )
    runner.train(coop, None, tmp_path, entry_point="cli")
    runner.evaluate(coop, None, tmp_path, tmp_path / "metrics.json", entry_point="cli")
    run_id = tracking.run_id_of(tmp_path)
    run = tracking.Store().client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == f"cooperative-small_cnn-digits-seed{coop.seed}"
    assert {"test/depth_full/acc_a", "test/leader/acc", "test/curve_0/macs"} <= set(
        run.data.metrics
    )
    assert json.loads(run.data.tags["dnc.curve_labels"])[-1] == "depth full"
    assert_model_predicts_identically(run_id, coop, tmp_path)


@pytest.mark.integration
def test_later_files_attach_to_the_recorded_run(tracked):
    from pipelines.tracking.mlflow_run import Store, attach_files

    extra = tracked["tmp"] / "later.png"
    extra.write_bytes(b"\x89PNG\r\n\x1a\n")
    assert attach_files(tracked["run_dir"], [extra], "later") == tracked["run_id"]
    listed = Store().client.list_artifacts(tracked["run_id"], "later")
    assert [a.path for a in listed] == ["later/later.png"]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture()
def mlflow_server(tracked):
    """The server `python -m pipelines ui` starts (its very command) on 127.0.0.1 over the
    run's SQLite store; it must answer /health, and is stopped afterwards."""
    from pipelines.tracking.ui import server_command

    port = free_port()
    cmd, env = server_command(tracked["uri"], port, tracked["tmp"] / "server-artifacts")
    log = tracked["tmp"] / "mlflow-server.log"
    proc = start(cmd, env, log)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc, log, timeout=90)
        yield url
    finally:
        stop(proc, grace=15)


@pytest.mark.slow
def test_rest_api_reads_the_run_and_logs_through_server(
    tracked, params, mlflow_server, monkeypatch
):
    run = _get(f"{mlflow_server}/api/2.0/mlflow/runs/get?run_id={tracked['run_id']}")["run"]
    assert run["info"]["status"] == "FINISHED"
    assert {"key": "split.factor", "value": "2"} in run["data"]["params"]
    metrics = {m["key"] for m in run["data"]["metrics"]}
    assert {"test/ensemble/acc", "val/member_1/acc", "train/js"} <= metrics
    # The same entry point works unchanged against the server: resuming a finished copy
    # continues the run over REST and ends it again.
    from pipelines.tracking import runner

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    copy = resumed_copy(tracked, "via-server")
    runner.train(params, None, copy, entry_point="prefect")
    run = _get(f"{mlflow_server}/api/2.0/mlflow/runs/get?run_id={tracked['run_id']}")["run"]
    assert {"key": "dnc.run_dir", "value": str(copy)} in run["data"]["tags"]
    assert run["info"]["status"] == "FINISHED"


class RaiseAtStart:
    def __init__(self, error: BaseException | None = None, sig: int | None = None) -> None:
        self.error, self.sig = error, sig

    def on_fit_start(self, state):
        if self.sig is not None:
            os.kill(os.getpid(), self.sig)
            time.sleep(5)  # the handler raises SystemExit before this ends
        raise self.error


@pytest.mark.parametrize(
    "stop, status",
    [(RaiseAtStart(RuntimeError("boom")), "FAILED"), (RaiseAtStart(sig=signal.SIGTERM), "KILLED")],
    ids=["exception", "sigterm"],
)
@pytest.mark.integration
def test_interrupted_or_failed_run_is_never_left_running(tracked, params, tmp_path, stop, status):
    from pipelines.tracking import mlflow_run as tracking
    from pipelines.tracking import runner

    if stop.sig is not None and signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("SIGTERM already handled in this process")
    with pytest.raises((RuntimeError, SystemExit)):
        runner.train(params, None, tmp_path / "run", entry_point="cli", callbacks=[stop])
    run = tracking.Store().client.get_run(tracking.run_id_of(tmp_path / "run"))
    assert run.info.status == status
    assert run.data.tags["dnc.stop_reason"].startswith(("RuntimeError", "SystemExit"))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_log_batches_respect_mlflow_limits(store):
    from pipelines.tracking.mlflow_run import Store

    store = Store()
    run_id = store.client.create_run(store.experiment_id("test-batching")).info.run_id
    metrics = {f"m/{i}": float(i) for i in range(1500)}
    store.log(run_id, epochs={0: metrics}, params={f"p{i}": "x" for i in range(150)})
    data = store.client.get_run(run_id).data
    assert len(data.metrics) == 1500 and len(data.params) == 150


def test_params_are_logged_as_reproducible_strings(params):
    from dnc.config_loading import parse_set
    from pipelines.tracking.schema import param_strings

    logged = param_strings(params)
    assert logged["data.train_size"] == "256" and logged["data.root"] == "null"
    assert logged["eval.latency_batch_sizes"] == "[1, 8]"
    assert params.with_overrides(parse_set([f"{k}={v}" for k, v in logged.items()])) == params


def test_final_metric_names():
    from pipelines.tracking.schema import final_metrics

    entry = {"acc": 90.0, "nll": 0.3, "params": 10, "macs": 100, "latency_ms": {"1": 2.0}}
    result = {
        "ensemble": {**entry, "k": 2, "acc_by_method": {"max": 89.0}},
        "members": [{"index": 0, **entry}, {"index": 1, **entry}],
        "prefixes": [{"k": 1, **entry}, {"k": 2, **entry}],
        "num_test": 256,
    }
    names = set(final_metrics(result))
    assert {"test/ensemble/acc", "test/ensemble/acc_by/max", "test/member_1/nll"} <= names
    assert {"test/k_2/latency_ms/b1", "test/num_images"} <= names


@pytest.mark.integration
def test_bad_tracking_settings_exit_2_before_compute(params, tmp_path, monkeypatch, capsys):
    from pipelines.cli import main

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))
    args = ["stage", "train", "--params", str(tmp_path / "params.yaml")]
    args += ["--out", str(tmp_path / "run")]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: MLFLOW_TRACKING_URI=http://127.0.0.1:") and "\n" not in err
    monkeypatch.setenv("DNC_TRACKING", "maybe")
    assert main(args) == 2
    assert (
        capsys.readouterr().err.strip()
        == "error: DNC_TRACKING='maybe': expected on, off or mlflow"
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.integration
def test_tracking_off_touches_no_store(tracked, params, tmp_path, monkeypatch):
    from pipelines.tracking import runner

    monkeypatch.setenv("DNC_TRACKING", "off")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'off.db'}")
    copy = resumed_copy(tracked, "untracked")
    (copy / "mlflow_run.json").unlink()
    runner.train(params, None, copy, entry_point="cli")
    assert not (tmp_path / "off.db").exists() and not (copy / "mlflow_run.json").exists()


def test_store_reports_bad_uris_but_not_bugs(tmp_path, monkeypatch):
    """A wrong URI is a setting (TrackingError, exit 2); an error inside MLflow's client that
    is no connection or store error is a bug and must surface as itself."""
    import mlflow

    from pipelines.tracking.store import Store, TrackingError

    with pytest.raises(TrackingError, match="MLFLOW_TRACKING_URI=nosuchscheme://x"):
        Store.connect("nosuchscheme://x")

    def broken(self, *args, **kwargs):
        raise RuntimeError("bug in a tracking plugin")

    monkeypatch.setattr(mlflow.MlflowClient, "search_experiments", broken)
    with pytest.raises(RuntimeError, match="bug in a tracking plugin"):
        Store.connect(f"sqlite:///{tmp_path / 'ok.db'}")
