"""`python -m pipelines runs reap` on a real SQLite MLflow store."""

from __future__ import annotations

import time

import pytest
from conftest import lazy

from pipelines.cli import main

tracking_store = lazy("pipelines.tracking.store")  # MLflow: out of every worker's collection

HOUR_MS = 3600 * 1000


@pytest.fixture()
def store(sqlite_tracking_uri):
    return tracking_store.Store(sqlite_tracking_uri)


def make_run(store, name: str, start_ms: int, epoch_ms: int | None = None, tags=None):
    client = store.client
    run = client.create_run(store.experiment_id("dnc"), start_time=start_ms, run_name=name)
    if epoch_ms is not None:
        client.log_metric(run.info.run_id, "epoch", 0.0, timestamp=epoch_ms, step=0)
    for key, value in (tags or {}).items():
        client.set_tag(run.info.run_id, key, value)
    return run.info.run_id


def status(store, run_id: str) -> str:
    return store.client.get_run(run_id).info.status


def test_reap_ends_only_runs_silent_for_longer_than_asked(store, capsys):
    now = int(time.time() * 1000)
    stale = make_run(store, "stale", now - 3 * HOUR_MS, epoch_ms=now - 150 * 60 * 1000)
    never_logged = make_run(store, "never-logged", now - 3 * HOUR_MS)
    alive = make_run(store, "alive", now - 3 * HOUR_MS, epoch_ms=now - 10 * 60 * 1000)
    resumed = make_run(
        store, "resumed", now - 3 * HOUR_MS, tags={tracking_store.REOPENED_AT: str(now - 60_000)}
    )
    done = make_run(store, "done", now - 5 * HOUR_MS)
    store.client.set_terminated(done, "FINISHED")
    argv = ["runs", "reap", "--stale-after", "2h", "--tracking-uri", store.uri]

    assert main([*argv, "--dry-run"]) == 0
    listed = capsys.readouterr().out
    assert stale in listed and never_logged in listed
    assert alive not in listed and resumed not in listed and done not in listed
    assert status(store, stale) == "RUNNING"  # a dry run ends nothing

    assert main(argv) == 0
    assert "ended 2 stale RUNNING run(s)" in capsys.readouterr().out
    for run_id in (stale, never_logged):
        run = store.client.get_run(run_id)
        assert run.info.status == "KILLED"
        assert run.data.tags[tracking_store.STOP_REASON].startswith(
            "reaped: no sign of life since "
        )
    assert [status(store, r) for r in (alive, resumed, done)] == ["RUNNING", "RUNNING", "FINISHED"]


def test_a_reopened_run_counts_as_alive_from_its_reopening(store):
    now = int(time.time() * 1000)
    run_id = make_run(store, "killed", now - 3 * HOUR_MS, epoch_ms=now - 3 * HOUR_MS)
    store.end(run_id, KeyboardInterrupt())
    store.reopen(run_id)  # what a resumed training does
    run = store.client.get_run(run_id)
    assert run.info.status == "RUNNING" and tracking_store.STOP_REASON not in run.data.tags
    assert abs(int(run.data.tags[tracking_store.REOPENED_AT]) - now) < 60_000
    argv = ["runs", "reap", "--stale-after", "1h", "--tracking-uri", store.uri]
    assert main(argv) == 0
    assert status(store, run_id) == "RUNNING"


@pytest.mark.parametrize("value", ["soon", "0h", "-1m", "5"])
def test_bad_duration_exits_2_naming_the_flag(store, capsys, value):
    assert main(["runs", "reap", f"--stale-after={value}", "--tracking-uri", store.uri]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --stale-after") and len(err.strip().splitlines()) == 1


def test_unknown_experiment_exits_2(store, capsys):
    argv = ["runs", "reap", "--stale-after", "1h", "--tracking-uri", store.uri]
    assert main([*argv, "--experiment", "nope"]) == 2
    assert "--experiment nope: no such experiment" in capsys.readouterr().err
