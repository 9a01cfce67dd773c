"""The scratch PostgreSQL (`source scripts/postgres.sh start`) enforces password auth: no
trust rule, no connection without the password, TCP on 127.0.0.1 only, an owner-only socket."""

from __future__ import annotations

import os
import stat

import pytest

URL = os.environ.get("DNC_TEST_POSTGRES_URL")

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not URL, reason="DNC_TEST_POSTGRES_URL is not set (source scripts/postgres.sh start)"
    ),
]


@pytest.fixture()
def psycopg(monkeypatch, tmp_path):
    """psycopg with libpq's other password sources (PGPASSWORD, ~/.pgpass) switched off."""
    psycopg = pytest.importorskip("psycopg")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))
    return psycopg


def conninfo(**change) -> dict:
    from sqlalchemy.engine import make_url

    url = make_url(URL)
    info = {"host": url.host, "port": url.port, "user": url.username, "dbname": "postgres"}
    info["password"] = url.password
    info.update(change)
    return {k: v for k, v in info.items() if v is not None}


def test_the_url_connects(psycopg):
    with psycopg.connect(**conninfo(), connect_timeout=10) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("password", [None, "", "wrong-password"])
def test_tcp_without_the_password_is_refused(psycopg, password):
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(**conninfo(password=password), connect_timeout=10).close()


def test_server_allows_no_trust_and_listens_on_loopback_only(psycopg):
    with psycopg.connect(**conninfo(), connect_timeout=10) as conn:
        methods = {m for (m,) in conn.execute("SELECT auth_method FROM pg_hba_file_rules")}
        assert methods == {"scram-sha-256"}
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        sockets = conn.execute("SHOW unix_socket_directories").fetchone()[0]
        perms = conn.execute("SHOW unix_socket_permissions").fetchone()[0]
    assert perms == "0700"
    for directory in sockets.split(","):
        mode = stat.S_IMODE(os.stat(directory.strip()).st_mode)
        assert mode == 0o700, f"{directory}: mode {mode:o}"


def test_socket_without_the_password_is_refused(psycopg):
    with psycopg.connect(**conninfo(), connect_timeout=10) as conn:
        directory = conn.execute("SHOW unix_socket_directories").fetchone()[0].split(",")[0]
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(**conninfo(host=directory.strip(), password=None)).close()
