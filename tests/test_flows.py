"""Prefect flows on digits: real flow runs against a Prefect test server (one per module)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import pytest
from conftest import ROOT, TINY, lazy

from dnc.config import ConfigError
from pipelines.dvc import runlock

deploy, flows = lazy("pipelines.prefect.deploy"), lazy("pipelines.prefect.flows")
flow_tasks = lazy("pipelines.prefect.tasks")

# Tiny and quick: fewer images and one epoch (the flow is under test, not the training).
QUICK = {**TINY, "data.train_size": 300, "train.epochs": 1}


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def task_states(flow_run_id: UUID) -> dict[str, list[str]]:
    """Task name -> state names of a flow run's task runs."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with _client() as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    out: dict[str, list[str]] = {}
    for run in runs:
        # Task run names: `prepare-a29`, `train <run folder>`.
        out.setdefault(run.name.split("-")[0].split(" ")[0], []).append(run.state.name)
    return out


def flow_logs(flow_run_id: UUID) -> str:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    with _client() as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return "\n".join(log.message for log in logs)


@pytest.fixture(scope="module")
def experiment(prefect_server, tmp_path_factory: pytest.TempPathFactory):
    """One completed dnc-experiment run: (flow run state, its RunPaths)."""
    base = tmp_path_factory.mktemp("experiment")
    state = flows.experiment_flow(
        params_path=str(ROOT / "params.yaml"),
        overrides=QUICK,
        out_dir=str(base / "run"),
        data_store=str(base / "store"),
        return_state=True,
    )
    assert state.is_completed(), state.message
    data_dir = Path(state.result()["data_dir"])
    return state, flow_tasks.RunPaths(data=data_dir, run=base / "run"), base


# -- pure functions (no server) ---------------------------------------------------------------


def test_data_key_depends_on_the_data_section_only(default_params):
    def key(**overrides) -> str:
        return flow_tasks.data_key(default_params.with_overrides({**TINY, **overrides}))

    assert key() == key(**{"split.factor": 4, "train.lr": 0.01})
    assert key() == key(seed=1)  # training seeds share one split: no re-split per seed
    assert key() != key(**{"data.split_seed": 1})
    assert key() != key(**{"data.val_size": 100})


def test_data_key_follows_the_raw_files(default_params, tmp_path):
    params = default_params.with_overrides({"data.root": str(tmp_path)})
    empty = flow_tasks.data_key(params)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"x")
    assert flow_tasks.data_key(params) != empty


def test_expand_grid_validates_every_point_and_names_the_key():
    points = flows.expand_grid(str(ROOT / "params.yaml"), TINY, {"split.factor": [1, 2]})
    assert [p.split.factor for _, p in points] == [1, 2]
    with pytest.raises(ConfigError, match=r"^split\.factor: "):
        flows.expand_grid(str(ROOT / "params.yaml"), TINY, {"split.factor": [1, 0]})
    with pytest.raises(ConfigError, match=r"^grid\.split\.factor: "):
        flows.expand_grid(str(ROOT / "params.yaml"), TINY, {"split.factor": 2})


def test_dvc_hash_is_dvcs_md5(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.txt").write_bytes(b"hi\n")
    (tmp_path / "d" / "sub" / "b.bin").write_bytes(b"\x00\x01")
    entries = sorted(
        [
            {"md5": hashlib.md5(b"hi\n").hexdigest(), "relpath": "a.txt"},
            {"md5": hashlib.md5(b"\x00\x01").hexdigest(), "relpath": "sub/b.bin"},
        ],
        key=lambda e: e["relpath"],
    )
    # DVC's folder hash: md5 of the sorted JSON listing, suffixed `.dir`.
    listing = json.dumps(entries, sort_keys=True).encode()
    expected = hashlib.md5(listing).hexdigest() + ".dir"
    assert runlock.dvc_hash(tmp_path / "d") == {
        "hash": "md5",
        "md5": expected,
        "size": 5,
        "nfiles": 2,
    }
    file_entry = runlock.dvc_hash(tmp_path / "d" / "a.txt")
    assert file_entry == {"hash": "md5", "md5": hashlib.md5(b"hi\n").hexdigest(), "size": 3}


def test_prefect_yaml_declares_the_three_flows():
    entries = deploy.declared()
    names = {deploy.load_entrypoint(e["entrypoint"]).name + "/" + e["name"] for e in entries}
    assert {"dnc-experiment/default", "dnc-sweep/default", "dnc-search/default"} <= names


@pytest.mark.slow  # ~3 s, more under load: a Python start that imports torch
def test_cli_bad_param_exits_2_before_prefect(tmp_path):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-m", "pipelines", "experiment", "--set", "split.factor=0"]
    cmd += ["--out-dir", str(tmp_path / "out")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: split.factor:")
    assert not (tmp_path / "out").exists() and not (tmp_path / "home").exists()


# -- real flow runs ---------------------------------------------------------------------------


@pytest.mark.slow
def test_experiment_flow_writes_outputs_and_artifacts(experiment):
    state, paths, _ = experiment
    flow_run_id = state.state_details.flow_run_id
    assert set(task_states(flow_run_id)) == {
        "prepare",
        "train",
        "evaluate",
        "flops",
        "version",
        "report",
        "publish",
    }
    assert {p.name for p in paths.model.iterdir()} >= {"best.pt", "last.pt", "history.json"}
    metrics = json.loads(paths.metrics.read_text())
    assert [p["k"] for p in metrics["prefixes"]] == [1, 2]
    assert json.loads(paths.flops.read_text())["split"] == 2
    assert "k=2 of S=2 (ensemble)" in paths.report.read_text()
    lock = json.loads(paths.lock.read_text())
    assert lock["run"]["flow_run_id"] == str(flow_run_id)
    assert lock["stages"]["prepare"]["outs"][0]["md5"] == runlock.dvc_hash(paths.data)["md5"]
    assert lock["stages"]["evaluate"]["outs"][0]["md5"] == runlock.dvc_hash(paths.metrics)["md5"]
    train = lock["stages"]["train"]
    assert train["params"][str(ROOT / "params.yaml")]["split"]["factor"] == 2
    code = {dep["path"]: dep["md5"] for dep in train["deps"]}
    assert code["dnc"] == runlock.dvc_hash(ROOT / "dnc")["md5"]  # code versioned as dvc.yaml says

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with _client() as client:
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    by_key = {a.key: a for a in artifacts}
    assert "k=2 of S=2 (ensemble)" in by_key["dnc-experiment"].data
    assert paths.metrics.absolute().as_uri() in by_key["dnc-experiment-metrics"].data


@pytest.mark.slow
def test_prepare_is_cached_and_redone_when_its_folder_is_gone(experiment, default_params):
    from prefect import flow

    @flow
    def prepare_only(data_dir: Path) -> None:
        flow_tasks.prepare_step(default_params.with_overrides(QUICK), data_dir)

    _, paths, _ = experiment
    cached = prepare_only(paths.data, return_state=True).state_details.flow_run_id
    assert task_states(cached) == {"prepare": ["Cached"]}
    meta = (paths.data / "meta.json").read_text()
    (paths.data / "train.pt").unlink()
    redone = prepare_only(paths.data, return_state=True).state_details.flow_run_id
    assert task_states(redone) == {"prepare": ["Completed"]}
    shutil.rmtree(paths.data)
    redone = prepare_only(paths.data, return_state=True).state_details.flow_run_id
    assert task_states(redone) == {"prepare": ["Completed"]}
    assert (paths.data / "meta.json").read_text() == meta  # the same bytes again


@pytest.mark.slow
def test_bad_parameter_fails_the_run_before_any_task(prefect_server, tmp_path):
    state = flows.experiment_flow(
        params_path=str(ROOT / "params.yaml"),
        overrides={**QUICK, "train.lr": -1},
        out_dir=str(tmp_path / "run"),
        data_store=str(tmp_path / "store"),
        return_state=True,
    )
    assert state.is_failed()
    assert "train.lr: Input should be greater than 0" in state.message
    assert task_states(state.state_details.flow_run_id) == {}
    assert not (tmp_path / "run").exists() and not (tmp_path / "store").exists()
    sweep = flows.sweep_flow(
        params_path=str(ROOT / "params.yaml"), grid={"split.factor": [2, 99]}, return_state=True
    )
    assert sweep.is_failed() and "split.factor: " in sweep.message
    assert task_states(sweep.state_details.flow_run_id) == {}


@pytest.mark.slow
def test_failed_task_fails_the_run_and_keeps_earlier_outputs(experiment, tmp_path):
    _, paths, base = experiment
    before = {p: p.read_bytes() for p in paths.run.rglob("*") if p.is_file()}
    missing = tmp_path / "no-such-dataset"
    state = flows.experiment_flow(
        params_path=str(ROOT / "params.yaml"),
        overrides={**QUICK, "data.dataset": "fashion_mnist", "data.root": str(missing)},
        out_dir=str(paths.run),
        data_store=str(base / "store"),
        return_state=True,
    )
    assert state.is_failed()
    flow_run_id = state.state_details.flow_run_id
    assert task_states(flow_run_id) == {"prepare": ["Failed"]}
    assert str(missing) in flow_logs(flow_run_id)  # the cause, in the run's logs
    assert {p: p.read_bytes() for p in paths.run.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_sweep_maps_configurations_one_training_at_a_time(prefect_server, tmp_path):
    state = flows.sweep_flow(
        params_path=str(ROOT / "params.yaml"),
        grid={"split.factor": [1, 2]},
        overrides=QUICK,
        max_concurrent=1,
        out_dir=str(tmp_path / "sweep"),
        data_store=str(tmp_path / "store"),
        return_state=True,
    )
    assert state.is_completed(), state.message
    rows = state.result()
    assert [r["point"] for r in rows] == [{"split.factor": 1}, {"split.factor": 2}]
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text()) == rows
    assert (tmp_path / "sweep" / "accuracy_vs_macs.png").is_file()
    assert "| split.factor |" in (tmp_path / "sweep" / "sweep.md").read_text()
    for row in rows:
        assert {"run.lock.json", "report.md", "flops.json"} <= set(os.listdir(row["run_dir"]))
    states = task_states(state.state_details.flow_run_id)
    assert states["prepare"] == ["Completed"]  # one shared data config, prepared once
    assert states["train"] == ["Completed"] * 2

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with _client() as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    spans = sorted((r.start_time, r.end_time) for r in runs if r.name.startswith("train"))
    assert spans[0][1] <= spans[1][0]  # max_concurrent=1: the trainings did not overlap
