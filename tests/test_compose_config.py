"""`docker-compose config` of every compose file in docker/: valid, and the stack's rules hold
(loopback-only ports, health-gated start order, no telemetry, one GPU per worker). Needs
only the docker-compose binary, no engine."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = shutil.which("docker-compose")
TELEMETRY = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}

pytestmark = pytest.mark.skipif(
    COMPOSE is None, reason="docker-compose is not installed (apt-get install docker-compose)"
)


def config(*files: str, password: str | None = "test-password") -> subprocess.CompletedProcess:
    """`docker-compose config` of the given docker/ files, with DNC_PG_PASSWORD set or not."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DNC_")}
    if password is not None:
        env["DNC_PG_PASSWORD"] = password
    args = [COMPOSE, "--project-directory", str(DOCKER)]
    for name in files:
        args += ["-f", str(DOCKER / name)]
    return subprocess.run([*args, "config"], env=env, capture_output=True, text=True, timeout=60)


def services(*files: str) -> dict:
    out = config(*files)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)["services"]


@pytest.mark.parametrize(
    "files", [("compose.yaml",), ("compose.yaml", "compose.gpu.yaml")], ids=["cpu", "gpu"]
)
@pytest.mark.integration
def test_every_compose_file_is_valid(files: tuple[str, ...]) -> None:
    assert config(*files).returncode == 0


def test_every_compose_file_is_checked() -> None:
    # A new compose file must join the parametrisation above.
    assert {p.name for p in DOCKER.glob("compose*.yaml")} == {"compose.yaml", "compose.gpu.yaml"}


@pytest.mark.integration
def test_password_is_required() -> None:
    out = config("compose.yaml", password=None)
    assert out.returncode != 0
    assert "DNC_PG_PASSWORD" in out.stderr


@pytest.mark.integration
def test_published_ports_bind_loopback_only() -> None:
    published = {
        name: svc["ports"] for name, svc in services("compose.yaml").items() if svc.get("ports")
    }
    assert set(published) == {"postgres", "mlflow", "prefect-server", "optuna-dashboard"}
    for name, ports in published.items():
        for port in ports:
            host_ip = port["host_ip"] if isinstance(port, dict) else port.split(":")[0]
            assert host_ip == "127.0.0.1", (name, port)


@pytest.mark.integration
def test_servers_start_after_their_dependencies_are_healthy() -> None:
    svcs = services("compose.yaml")
    for name, svc in svcs.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            want = (
                "service_completed_successfully" if dep == "prefect-deploy" else "service_healthy"
            )
            assert cond["condition"] == want, (name, dep)
            if want == "service_healthy":
                assert "healthcheck" in svcs[dep], dep
    assert svcs["prefect-worker"]["depends_on"] == {
        "prefect-deploy": {"condition": "service_completed_successfully"}
    }
    assert set(svcs["mlflow"]["depends_on"]) == {"postgres"}


@pytest.mark.integration
def test_one_database_per_service_and_no_telemetry() -> None:
    svcs = services("compose.yaml")
    assert svcs["postgres"]["environment"]["POSTGRES_DATABASES"].split() == [
        "mlflow",
        "optuna",
        "prefect",
    ]
    mlflow_cmd = " ".join(svcs["mlflow"]["command"])
    assert "@postgres:5432/mlflow" in mlflow_cmd
    prefect_db = svcs["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert prefect_db.startswith("postgresql+asyncpg://") and prefect_db.endswith("/prefect")
    assert svcs["prefect-worker"]["environment"]["DNC_OPTUNA_STORAGE"].endswith("/optuna")
    for name, svc in svcs.items():
        if svc["image"].startswith("dnc:"):
            assert TELEMETRY.items() <= svc["environment"].items(), name


@pytest.mark.integration
def test_gpu_override_reserves_one_gpu_per_worker() -> None:
    cpu, gpu = services("compose.yaml"), services("compose.yaml", "compose.gpu.yaml")
    assert "resources" not in (cpu["prefect-worker"].get("deploy") or {})
    devices = gpu["prefect-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert (
        gpu["prefect-worker"]["deploy"]["replicas"] == cpu["prefect-worker"]["deploy"]["replicas"]
    )
    # Only the workers train: the servers get no GPU.
    assert all("deploy" not in svc for name, svc in gpu.items() if name != "prefect-worker")
