"""The parallel-worker search on PostgreSQL (what several machines share), a fresh database
per test. Needs `DNC_TEST_POSTGRES_URL` (a SQLAlchemy URL base, e.g. started by
`source scripts/postgres.sh start`)."""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy
from test_search import assert_exact, load, worker, write_params

BASE_URL = os.environ.get("DNC_TEST_POSTGRES_URL")

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not BASE_URL, reason="DNC_TEST_POSTGRES_URL is not set (source scripts/postgres.sh start)"
    ),
]


@pytest.fixture()
def postgres_url() -> str:
    """A new, empty database on the test server; dropped afterwards."""
    import psycopg

    url = sqlalchemy.engine.make_url(BASE_URL)
    name = f"dnc_search_{uuid.uuid4().hex[:12]}"
    conninfo = url.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield url.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.slow
def test_two_workers_share_a_postgres_study_exactly(tmp_path, postgres_url):
    write_params(tmp_path, n_trials=4, storage=postgres_url)
    procs = [worker(tmp_path, "par-pg", "--storage", postgres_url) for _ in range(2)]
    outs = [p.communicate(timeout=240)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert_exact(load(tmp_path, "par-pg", postgres_url), 4)
    dirs = sorted(p.name for p in (tmp_path / "runs/search/par-pg").iterdir())
    assert dirs == [f"trial_{n}" for n in range(4)]
