"""The run's real `prefect server` on 127.0.0.1, the prefect.yaml deployments served by
`python -m pipelines serve`, and a run of the deployment going to COMPLETED with the same
outputs as a direct `python -m pipelines experiment` run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import servers
from conftest import ROOT, TINY
from servers import free_port, start, stop

QUICK = {**TINY, "data.train_size": 300, "train.epochs": 1}


def wait_deployed(url: str, name: str, serve: subprocess.Popen, log: Path) -> None:
    """Until `serve` has registered deployment `flow/name` with the server."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert serve.poll() is None, f"serve exited:\n{log.read_text()[-2000:]}"
        try:
            with urllib.request.urlopen(f"{url}/deployments/name/{name}", timeout=2):
                return
        except OSError:  # 404 until registered
            time.sleep(0.5)
    raise TimeoutError(f"{name} not deployed after 120 s:\n{log.read_text()[-2000:]}")


@pytest.fixture()
def server(prefect_server, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """The run's Prefect server (tests/servers.py), and the environment of a process that
    talks to it with a throwaway PREFECT_HOME (this test reads back only its own run)."""
    url = servers.shared_prefect_server()
    env = {
        **os.environ,
        "PREFECT_API_URL": url,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "true",
        "DNC_TRACKING": "off",  # MLflow is not under test here
    }
    return url, env


def outputs(run_dir: Path) -> set[str]:
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_deployment_run_completes_with_the_direct_runs_outputs(server, tmp_path):
    from prefect.deployments import run_deployment

    url, env = server
    serve = start(
        [sys.executable, "-m", "pipelines", "serve", "--only", "dnc-experiment/default"],
        env,
        tmp_path / "serve.log",
    )
    # The direct run goes alongside the deployment run (each with its own data store).
    direct = start(
        [sys.executable, "-m", "pipelines", "experiment", "--params", "params.yaml"]
        + [arg for k, v in QUICK.items() for arg in ("--set", f"{k}={json.dumps(v)}")]
        + ["--out-dir", str(tmp_path / "direct"), "--data-store", str(tmp_path / "store-a")],
        env,
        tmp_path / "direct.log",
    )
    try:
        wait_deployed(url, "dnc-experiment/default", serve, tmp_path / "serve.log")
        # As `prefect deployment run --watch` does, in this process (the client already
        # points at the server): create the flow run, poll its state to the end.
        deployed_run = run_deployment(
            "dnc-experiment/default",
            parameters={
                "overrides": QUICK,
                "out_dir": str(tmp_path / "deployed"),
                "data_store": str(tmp_path / "store-b"),
            },
            timeout=300,
            poll_interval=1,
        )
        serve_log = (tmp_path / "serve.log").read_text()[-3000:]
        assert deployed_run.state.is_completed(), f"{deployed_run.state}\n{serve_log}"
        assert direct.wait(300) == 0, (tmp_path / "direct.log").read_text()[-3000:]
    finally:
        stop(direct)
        stop(serve)

    a, b = tmp_path / "direct", tmp_path / "deployed"
    assert outputs(a) == outputs(b) >= {"model/best.pt", "metrics.json", "run.lock.json"}
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert [m["acc"] for m in ma["members"]] == [m["acc"] for m in mb["members"]]
    assert ma["ensemble"]["acc"] == mb["ensemble"]["acc"]  # same params, same seed, same model
    la, lb = (json.loads((d / "run.lock.json").read_text()) for d in (a, b))
    data_a, data_b = (lock["stages"]["prepare"]["outs"][0] for lock in (la, lb))
    assert data_a["md5"] == data_b["md5"]  # the same versioned data
    code_a, code_b = (
        [d for d in lock["stages"]["train"]["deps"] if d["path"] == "dnc"] for lock in (la, lb)
    )
    assert code_a == code_b and code_a  # the same code version
    assert lb["run"]["deployment"] == "default" and la["run"]["deployment"] is None


@pytest.mark.integration
def test_serve_fails_naming_a_deployment_that_does_not_import(tmp_path, monkeypatch, capsys):
    """A broken entrypoint must stop `serve`, not leave the other deployments running
    while its runs silently never happen."""
    from pipelines.cli import main
    from pipelines.prefect.deploy import DeploymentError, declared, runner_deployments

    (tmp_path / "prefect.yaml").write_text(
        "deployments:\n"
        "  - name: broken\n"
        "    entrypoint: pipelines/prefect/no_such_module.py:flow\n"
        "  - name: misnamed\n"
        "    entrypoint: pipelines/prefect/report.py:no_such_flow\n"
    )
    entries = declared(tmp_path / "prefect.yaml")
    with pytest.raises(DeploymentError, match=r"deployment 'broken' \(pipelines/prefect/no_such"):
        runner_deployments(entries)
    with pytest.raises(DeploymentError, match="deployment 'misnamed'.*AttributeError"):
        runner_deployments(entries[1:])
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.chdir(tmp_path)  # serve chdirs to the file's folder; restored after the test
    # Prefect reads its settings once per process: set the API URL through its own context.
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
        assert main(["serve", "--prefect-yaml", str(tmp_path / "prefect.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: deployment 'broken'") and "\n" not in err


@pytest.mark.integration
def test_prefect_yaml_entrypoints_load_without_shadowing_the_libraries():
    """Prefect loads an entrypoint as a script with its folder first on sys.path; the
    `pipelines.prefect` / `pipelines.dvc` packages must not stand in for the real libraries."""
    code = (
        "import json, sys, yaml\n"
        "from prefect.flows import load_flow_from_entrypoint\n"
        "names = []\n"
        "for d in yaml.safe_load(open('prefect.yaml'))['deployments']:\n"
        "    names.append(load_flow_from_entrypoint(d['entrypoint']).name)\n"
        "from importlib.util import find_spec\n"  # where an import would load them from
        "files = [find_spec(m).origin for m in ('prefect', 'dvc', 'mlflow', 'optuna')]\n"
        "print(json.dumps({'names': names, 'files': files}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["names"] == ["dnc-experiment", "dnc-sweep", "dnc-search"]
    assert all("site-packages" in f and "/pipelines/" not in f for f in out["files"]), out
