"""The tracking schema against a PostgreSQL-backed MLflow store (started by `.ci/run`).

`DNC_TEST_POSTGRES_URL` is a SQLAlchemy URL base (`postgresql+psycopg://postgres@host:port`);
each test session creates a fresh database in it and drops it afterwards.
"""

from __future__ import annotations

import os
import uuid

import pytest
from test_tracking import (
    assert_full_schema,
    assert_model_predicts_identically,
    run_pipeline,
    store_env,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def postgres_uri():
    """A fresh database on the server of `DNC_TEST_POSTGRES_URL`, dropped afterwards."""
    base = os.environ.get("DNC_TEST_POSTGRES_URL")
    if not base:
        pytest.skip(
            "DNC_TEST_POSTGRES_URL is not set (e.g. `source scripts/postgres.sh start`; "
            ".ci/run does it)"
        )
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"dnc_test_{uuid.uuid4().hex[:12]}"
    admin = make_url(base).set(drivername="postgresql", database="postgres")
    admin_dsn = admin.render_as_string(hide_password=False)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(base).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        # FORCE: MLflow's connection pool in this process still holds connections.
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def tracked_pg(postgres_uri, default_params, tmp_path_factory):
    from conftest import TINY

    params = default_params.with_overrides({**TINY, "data.train_size": 256})
    tmp = tmp_path_factory.mktemp("tracking-pg")
    with pytest.MonkeyPatch.context() as mp:
        store_env(mp, postgres_uri, tmp)
        yield {"uri": postgres_uri, "params": params, **run_pipeline(params, tmp, kill_after=0)}


def test_killed_then_resumed_run_in_postgres(tracked_pg):
    assert tracked_pg["killed_status"] == "KILLED"
    assert tracked_pg["run_id"] == tracked_pg["killed_id"]


def test_full_schema_and_model_in_postgres(tracked_pg):
    from mlflow import MlflowClient

    client = MlflowClient(tracked_pg["uri"])
    run_id, params = tracked_pg["run_id"], tracked_pg["params"]
    assert client.get_run(run_id).info.experiment_id
    assert_full_schema(client, run_id, params, tracked_pg["run_dir"])
    assert_model_predicts_identically(run_id, params, tracked_pg["run_dir"])
