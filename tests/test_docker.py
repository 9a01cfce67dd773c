"""The docker stack end to end on a real engine (docker/compose.yaml, docs/docker.md).

Builds the images (`docker/build.sh --local` unless DNC_DOCKER_BUILD says otherwise), brings
the stack up under a fresh project name on free loopback ports, runs deployments through
the work pool, checks what landed in the MLflow server and in PostgreSQL, kills a worker
mid-run, and always tears down containers, networks and volumes. `.ci/run` starts the
engine (scripts/docker-engine.sh); without one the module is skipped.

    DNC_DOCKER_BUILD=skip   reuse the images already built (development)
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from servers import free_port

from pipelines.dvc.preset import load_preset

ROOT = Path(__file__).resolve().parents[1]
TINY = load_preset(ROOT / "presets" / "tiny.yaml")
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _engine_problem() -> str | None:
    """Why the stack cannot run here, or None."""
    if not shutil.which("docker") or not shutil.which("docker-compose"):
        return "docker or docker-compose is not installed (scripts/docker-engine.sh start)"
    try:
        out = subprocess.run(["docker", "info"], capture_output=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "the docker engine does not answer (scripts/docker-engine.sh start)"
    if out.returncode != 0:
        return "no docker engine is reachable (source scripts/docker-engine.sh start)"
    return None


PROBLEM = _engine_problem()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or ""),
    pytest.mark.timeout(1800),
]


@dataclass
class Stack:
    """A running compose project: its environment, ports and a few calls into it."""

    project: str
    env: dict[str, str]

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        cmd = ["docker-compose", "-p", self.project, "-f", str(ROOT / "docker/compose.yaml")]
        out = subprocess.run(
            [*cmd, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and out.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)}: {out.stderr[-3000:]}")
        return out.stdout

    def url(self, service: str) -> str:
        port = {"mlflow": "DNC_MLFLOW_PORT", "prefect": "DNC_PREFECT_PORT"}[service]
        return f"http://127.0.0.1:{self.env[port]}"

    def prefect(self, method: str, path: str, body: dict | None = None) -> dict:
        """One call of the Prefect server's REST API (as the host sees it)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"{self.url('prefect')}/api{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")

    def run_deployment(self, name: str, parameters: dict) -> str:
        """Create a flow run of deployment `flow/name` on the work pool; its id."""
        dep = self.prefect("GET", f"/deployments/name/{name}")
        run = self.prefect(
            "POST", f"/deployments/{dep['id']}/create_flow_run", {"parameters": parameters}
        )
        return run["id"]

    def wait_flow_run(self, run_id: str, states: set[str], timeout: float) -> dict:
        """Poll until the flow run is in one of `states`; fail on timeout naming its state."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.prefect("GET", f"/flow_runs/{run_id}")
            if run["state"]["type"] in states:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"flow run still {run['state']['type']} after {timeout} s")
            time.sleep(2)

    def psql(self, database: str, sql: str) -> list[list[str]]:
        out = self.compose(
            "exec",
            "-T",
            "postgres",
            "psql",
            "-h",
            "/tmp",
            "-U",
            "dnc",
            "-d",
            database,
            "-Atc",
            sql,
        )
        return [line.split("|") for line in out.splitlines() if line]


def _build(env: dict[str, str]) -> None:
    how = os.environ.get("DNC_DOCKER_BUILD", "local")
    if how == "skip":
        return
    args = ["--local"] if how == "local" else []
    subprocess.run(
        ["bash", str(ROOT / "docker/build.sh"), *args], env=env, check=True, timeout=1800
    )


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """The stack built and up, with every healthcheck green; torn down whatever happens."""
    env = {
        **os.environ,
        "DNC_PG_PASSWORD": secrets.token_hex(16),
        "DNC_WORKERS": "2",
        **{f"DNC_{name}_PORT": str(free_port()) for name in ("PG", "MLFLOW", "PREFECT", "OPTUNA")},
    }
    st = Stack(project=f"dnctest{secrets.token_hex(4)}", env=env)
    started = time.monotonic()
    _build(env)
    built = time.monotonic()
    try:
        st.compose("up", "-d", timeout=900)
        _wait_healthy(st, timeout=300)
        _wait_workers(st, int(env["DNC_WORKERS"]), timeout=180)
        print(f"\ndocker: build {built - started:.0f} s, up {time.monotonic() - built:.0f} s")
        yield st
    finally:
        st.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)


def _containers(st: Stack) -> dict[str, dict]:
    """compose service name (+ replica) -> `docker inspect` of its container."""
    ids = st.compose("ps", "-q").split()
    out = subprocess.run(
        ["docker", "inspect", *ids], env=st.env, capture_output=True, text=True, check=True
    )
    info = json.loads(out.stdout)
    labels = ("com.docker.compose.service", "com.docker.compose.container-number")
    return {"/".join(c["Config"]["Labels"][k] for k in labels): c for c in info}


def _online_workers(st: Stack) -> set[str]:
    workers = st.prefect("POST", "/work_pools/dnc/workers/filter", {})
    return {w["name"] for w in workers if w["status"] == "ONLINE"}


def _wait_workers(st: Stack, count: int, timeout: float) -> None:
    """The workers have polled the pool (they start seconds after their containers)."""
    deadline = time.monotonic() + timeout
    while len(_online_workers(st)) < count:
        assert time.monotonic() < deadline, f"{_online_workers(st)} online after {timeout} s"
        time.sleep(2)


def _wait_healthy(st: Stack, timeout: float) -> None:
    """Every long-running container running and healthy; the one-shot set-up exited 0."""
    deadline = time.monotonic() + timeout
    while True:
        status = {}
        for name, c in _containers(st).items():
            state = c["State"]
            if name.startswith("prefect-deploy/"):
                status[name] = "done" if state["Status"] == "exited" else state["Status"]
                assert state["Status"] != "exited" or state["ExitCode"] == 0, "set-up failed"
            else:
                status[name] = state.get("Health", {}).get("Status", state["Status"])
        if len(status) == 7 and set(status.values()) <= {"healthy", "running", "done"}:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not healthy after {timeout} s: {status}")
        time.sleep(3)


def _mlflow(stack: Stack):
    from mlflow import MlflowClient  # imported here: collection stays light without Docker

    client = MlflowClient(stack.url("mlflow"))
    return client, client.get_experiment_by_name("dnc").experiment_id


def _training_runs(stack: Stack, run_dir_like: str) -> list:
    client, exp = _mlflow(stack)
    return client.search_runs(
        [exp], filter_string=f"tags.`dnc.run_dir` LIKE '{run_dir_like}'", max_results=50
    )


def test_stack_is_up_on_loopback_with_two_workers(stack: Stack) -> None:
    containers = _containers(stack)
    services = {name.split("/")[0] for name in containers}
    assert services == {
        "postgres",
        "mlflow",
        "prefect-server",
        "prefect-deploy",
        "prefect-worker",
        "optuna-dashboard",
    }
    for name, c in containers.items():
        for bindings in (c["HostConfig"]["PortBindings"] or {}).values():
            assert {b["HostIp"] for b in bindings} == {"127.0.0.1"}, name
    hostnames = {c["Config"]["Hostname"] for n, c in containers.items() if "worker" in n}
    assert _online_workers(stack) == {f"worker-{h}" for h in hostnames}
    assert len(hostnames) == 2


def test_sweep_deployment_tracks_each_configuration_on_the_server(stack: Stack) -> None:
    from mlflow.entities import LoggedModelStatus

    grid = [1, 2]
    run_id = stack.run_deployment(
        "dnc-sweep/docker", {"grid": {"split.factor": grid}, "overrides": TINY}
    )
    run = stack.wait_flow_run(run_id, FINAL, timeout=900)
    assert run["state"]["type"] == "COMPLETED", run["state"]["message"]

    runs = _training_runs(stack, f"runs/sweep/{run['name']}/%")
    by_s = {int(r.data.tags["dnc.split_factor"]): r for r in runs}
    assert sorted(by_s) == grid and len(runs) == len(grid)
    client, _ = _mlflow(stack)
    for s, r in by_s.items():
        assert r.info.status == "FINISHED"
        members = {k.split("/")[1] for k in r.data.metrics if k.startswith("test/member_")}
        assert members == {f"member_{i}" for i in range(s)}  # S members, as the grid says
        assert r.data.metrics["test/num_images"] == TINY["data.test_size"]
        # Accuracy in percent of 256 images: a whole number of correct images.
        correct = r.data.metrics["test/ensemble/acc"] / 100 * TINY["data.test_size"]
        assert 0 <= correct <= TINY["data.test_size"] and correct == pytest.approx(round(correct))
        model = client.get_logged_model(r.data.tags["dnc.model_uri"].removeprefix("models:/"))
        assert model.source_run_id == r.info.run_id and model.status == LoggedModelStatus.READY
        # The artifacts are served by the MLflow server: the host downloads them over HTTP.
        assert {a.path for a in client.list_logged_model_artifacts(model.model_id)} >= {"MLmodel"}


def test_search_study_keeps_its_trials_in_postgres(stack: Stack) -> None:
    storage = stack.env["DNC_PG_PASSWORD"].join(
        ("postgresql+psycopg://dnc:", "@postgres:5432/optuna")
    )
    # The tiny run's width: the default space (widths 16-64) trains for minutes on 2 cores.
    space = {"split.factor": {"choices": [1, 2]}, "model.width": {"choices": [8]}}
    overrides = {**TINY, "search.space": space, "search.pruner": "none"}  # both trials complete
    params = {"study": "docker-e2e", "n_trials": 2, "storage": storage, "overrides": overrides}
    run = stack.wait_flow_run(
        stack.run_deployment("dnc-search/docker", params), FINAL, timeout=900
    )
    assert run["state"]["type"] == "COMPLETED", run["state"]["message"]
    rows = stack.psql(
        "optuna",
        "SELECT t.state, count(*) FROM trials t JOIN studies s USING (study_id) "
        "WHERE s.study_name = 'docker-e2e' GROUP BY t.state",
    )
    assert dict(rows) == {"COMPLETE": "2"}


def _running_training(stack: Stack):
    """The one training MLflow run in progress (its run-dir tag comes only at the end)."""
    client, exp = _mlflow(stack)
    where = "attributes.status = 'RUNNING' and tags.`dnc.entry_point` = 'prefect'"
    runs = client.search_runs([exp], filter_string=where)
    return runs[0] if len(runs) == 1 else None


def test_killed_worker_run_is_retried_by_the_pool(stack: Stack) -> None:
    """Kill the worker container mid-training: the lost-run automation reschedules the run,
    another worker runs it again, the training resumes and the same MLflow run finishes."""
    overrides = {**TINY, "train.epochs": 20}  # ~1 s an epoch on an idle core
    run_id = stack.run_deployment("dnc-experiment/docker", {"overrides": overrides})
    run = stack.wait_flow_run(run_id, {"RUNNING", *FINAL}, timeout=300)
    assert run["state"]["type"] == "RUNNING", run["state"]["message"]
    deadline = time.monotonic() + 300
    while (training := _running_training(stack)) is None or training.data.metrics.get(
        "epoch", 0
    ) < 2:
        assert time.monotonic() < deadline, "training logged no third epoch in 300 s"
        time.sleep(1)
    worker = stack.prefect("GET", f"/flow_runs/{run_id}")["labels"]["prefect.worker.name"]
    victim = [
        c for c in _containers(stack).values() if worker == f"worker-{c['Config']['Hostname']}"
    ]
    assert len(victim) == 1, worker
    subprocess.run(
        ["docker", "kill", victim[0]["Id"]],
        env=stack.env,
        check=True,
        capture_output=True,
        timeout=60,
    )

    final = stack.wait_flow_run(run_id, FINAL, timeout=900)  # never stuck RUNNING
    states = [s["name"] for s in stack.prefect("GET", f"/flow_run_states/?flow_run_id={run_id}")]
    assert "AwaitingRetry" in states, states
    assert final["state"]["type"] == "COMPLETED", final["state"]["message"]
    assert final["labels"]["prefect.worker.name"] != worker  # the other worker took it
    client, _ = _mlflow(stack)
    resumed = client.get_run(training.info.run_id)  # the same MLflow run, continued
    assert resumed.info.status == "FINISHED"
    assert resumed.data.metrics["epoch"] == overrides["train.epochs"] - 1
    assert resumed.data.tags["dnc.run_dir"].endswith(f"/{final['name']}/model")
