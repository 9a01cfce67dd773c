"""No credential in any file the project writes or any message it prints.

A tracking / Optuna URL with a password: against the real scratch PostgreSQL
(`source scripts/postgres.sh start` exports `DNC_TEST_POSTGRES_URL`, password inside) the
stages and a search run, their folders go into a DVC cache, and every file, stdout and
stderr is grepped for the password; against an unreachable URL the error message (also
with -v, the traceback) must hide it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FAKE_SECRET = "Fake9Secret0Pw"


def tiny_params_file(tmp: Path, **extra: object) -> Path:
    """params.yaml shrunk to a seconds-long CPU run on digits (plus `extra` dotted keys)."""
    sys.path.insert(0, str(ROOT))
    from dnc.config_loading import apply_overrides
    from pipelines.dvc.preset import load_preset

    tree = yaml.safe_load((ROOT / "params.yaml").read_text())
    tree = apply_overrides(tree, {**load_preset(ROOT / "presets" / "tiny.yaml"), **extra})
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


# Unset for every run, as a user's shell would not have them.
QUIET = ("DNC_TRACKING", "DNC_DEBUG")


def pipelines(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`python -m pipelines ARGS` in `cwd` with `env` on top of a tracking-on environment."""
    full = {k: v for k, v in os.environ.items() if k not in QUIET}
    full.update({"PYTHONPATH": str(ROOT), "PATH": f"{BIN}{os.pathsep}{full['PATH']}", **env})
    full.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    cmd = [sys.executable, "-m", "pipelines", *args]
    return subprocess.run(cmd, cwd=cwd, env=full, capture_output=True, text=True, timeout=600)


def files_holding(root: Path, secret: str) -> list[str]:
    """Every file under `root` whose bytes contain `secret` (databases and caches included)."""
    needle = secret.encode()
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.fixture()
def pg_url():
    """A fresh database on the scratch PostgreSQL (real password), dropped afterwards."""
    base = os.environ.get("DNC_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("DNC_TEST_POSTGRES_URL is not set (source scripts/postgres.sh start)")
    import psycopg
    from sqlalchemy.engine import make_url

    # Two databases: MLflow's and Optuna's schemas each keep their own alembic_version.
    names = [f"dnc_secret_{kind}_{uuid.uuid4().hex[:10]}" for kind in ("mlflow", "optuna")]
    admin = make_url(base).set(drivername="postgresql", database="postgres")
    dsn = admin.render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')
    urls = [make_url(base).set(database=name) for name in names]
    assert urls[0].password, "the scratch PostgreSQL must use a password"
    yield *(u.render_as_string(hide_password=False) for u in urls), urls[0].password
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def dvc_cache_of(dvc_here, repo: Path, *outs: str) -> None:
    """Put `outs` into a DVC cache, as `dvc repro` / `dvc push` would (the remote is a copy)."""
    for args in (["init", "--no-scm", "-q"], ["add", "-q", *outs]):
        dvc_here(repo, *args, env={"DVC_NO_ANALYTICS": "1"})


@pytest.mark.slow
@pytest.mark.postgres
def test_real_postgres_password_is_never_written_or_printed(tmp_path, pg_url, dvc_here):
    url, storage, password = pg_url
    env = {"MLFLOW_TRACKING_URI": url, "DNC_ARTIFACT_ROOT": str(tmp_path / "mlartifacts")}
    # The smallest run that still writes every file: one seed, one epoch, 256 images.
    small = {"compare.seeds": [0], "train.epochs": 1, "data.train_size": 256}
    params = str(tiny_params_file(tmp_path, **small))
    steps = [
        ("stage", "prepare", "--params", params, "--out", "data"),
        # The DVC stage: trains, then evaluates and logs into the same run, in one process.
        ("stage", "run", "--params", params, "--config", "base", "--data", "data",
         "--models", "models/base", "--metrics", "reports/evaluate/base"),
        ("search", "--study", "s", "--params", params, "--storage", storage, "--n-trials", "1",
         "--set", "train.epochs=1", "--data", "data", "--models-dir", "models/search",
         "--reports-dir", "reports/search"),
    ]  # fmt: skip
    printed = ""
    for step in steps:
        proc = pipelines(tmp_path, env, *step)
        assert proc.returncode == 0, (step, proc.stdout, proc.stderr)
        printed += proc.stdout + proc.stderr
    ref = yaml.safe_load((tmp_path / "models/base/seed0/mlflow_run.json").read_text())
    assert ref["tracking_uri"].startswith("postgresql+psycopg://postgres@")  # no password
    assert (tmp_path / "reports/search/s/best.txt").is_file()
    dvc_cache_of(dvc_here, tmp_path, "models", "reports")
    assert password not in printed
    assert files_holding(tmp_path, password) == []


@pytest.mark.parametrize(
    "variable, url",
    [
        ("MLFLOW_TRACKING_URI", f"postgresql+psycopg://dnc:{FAKE_SECRET}@127.0.0.1:1/dnc"),
        ("MLFLOW_TRACKING_URI", f"http://dnc:{FAKE_SECRET}@127.0.0.1:1"),
        (
            "MLFLOW_TRACKING_URI",
            f"postgresql+psycopg://dnc@127.0.0.1:1/dnc?password={FAKE_SECRET}",
        ),
    ],
)
@pytest.mark.integration
def test_unreachable_store_message_hides_the_password(tmp_path, cli_here, caplog, variable, url):
    # `-v`: the traceback, then the very line printed without it (pipelines.common.errors),
    # so one run shows both. In this process (conftest's `cli_here`): the same lines.
    params = str(tiny_params_file(tmp_path))
    argv = ["-v", "stage", "train", "--params", params, "--out", "run"]
    rc, out = cli_here(argv, {variable: url}, tmp_path, unset=QUIET)
    assert rc == 2, out
    assert "Traceback" in out and out.strip().splitlines()[-1].startswith("error: "), out
    assert variable in out and FAKE_SECRET not in out
    assert FAKE_SECRET not in caplog.text  # log records a subprocess would print as well
    assert files_holding(tmp_path, FAKE_SECRET) == []


@pytest.mark.integration
def test_unreachable_optuna_storage_message_hides_the_password(tmp_path, cli_here, caplog):
    params = str(tiny_params_file(tmp_path))
    storage = f"postgresql+psycopg://dnc:{FAKE_SECRET}@127.0.0.1:1/optuna"
    # -v: the traceback and the one line, as above
    argv = ["-v", "search", "--study", "s", "--params", params, "--storage", storage]
    rc, out = cli_here(argv, {"DNC_TRACKING": "off"}, tmp_path, unset=QUIET)
    assert rc == 2, out
    assert "Traceback" in out and out.strip().splitlines()[-1].startswith("error: "), out
    assert "search.storage" in out and FAKE_SECRET not in out
    assert FAKE_SECRET not in caplog.text
