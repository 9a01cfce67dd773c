"""No password survives `redact` (messages) or `public_uri` (stored URIs), whatever the shape."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from pipelines.common.redact import public_uri, redact

SECRET = "S3cr3t-pw"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"postgresql+psycopg://user:{SECRET}@host/db",
            "postgresql+psycopg://user:***@host/db",
        ),
        (
            f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:55432/postgres",
            "postgresql+psycopg://postgres:***@127.0.0.1:55432/postgres",
        ),
        (
            f"https://alice:{SECRET}@mlflow.example.org/api",
            "https://alice:***@mlflow.example.org/api",
        ),
        (f"http://:{SECRET}@localhost:5000", "http://:***@localhost:5000"),  # empty user
        ("postgresql://user:@host/db", "postgresql://user:***@host/db"),  # empty password
        (f"mysql://u:{SECRET}@[::1]:3306/db", "mysql://u:***@[::1]:3306/db"),  # IPv6 host
        ("postgresql://u:p%40ss%2Fw%3A@h/db", "postgresql://u:***@h/db"),  # percent-encoded
        ("postgresql://u:p@ss/w:rd@h/db", "postgresql://u:***@h/db"),  # raw @ / : in it
        ("postgresql://u@tenant:pw@h/db", "postgresql://u@tenant:***@h/db"),  # @ in the user
        (
            f"postgresql://h/db?user=u&password={SECRET}&sslmode=require",
            "postgresql://h/db?user=u&password=***&sslmode=require",
        ),
        (f"host=h port=5432 password={SECRET} dbname=d", "host=h port=5432 password=*** dbname=d"),
        ("host=h password='a b''c' dbname=d", "host=h password=*** dbname=d"),  # libpq quoting
        (f"PGPASSWORD={SECRET} psql", "PGPASSWORD=*** psql"),
        (f"?api_key={SECRET}&Token={SECRET}", "?api_key=***&Token=***"),
    ],
)
def test_redact_masks_the_password(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "postgresql+psycopg://postgres@127.0.0.1:55432/postgres",
        "http://[::1]:5000/api/2.0/mlflow/runs/get?run_id=abc",
        "sqlite:///mlflow.db",
        "file:///tmp/runs/a:b@c",  # no authority: nothing to mask
        "http://127.0.0.1:5000",
        "train.lr=0.1 split.factor=2 max_tokens=5",
        "see user@example.org: it failed",
    ],
)
def test_redact_leaves_text_without_credentials_alone(text):
    assert redact(text) == text


def test_several_uris_in_one_message():
    msg = (
        f"cannot reach 'postgresql+psycopg://a:{SECRET}@db1/x' nor "
        f"(https://b:{SECRET}x@srv:8443/api), tried password={SECRET}y"
    )
    out = redact(msg)
    assert SECRET not in out
    assert out == (
        "cannot reach 'postgresql+psycopg://a:***@db1/x' nor "
        "(https://b:***@srv:8443/api), tried password=***"
    )


def test_redact_of_an_exception_repr():
    err = RuntimeError(f"could not connect to postgresql://u:{SECRET}@h:5432/db")
    assert SECRET not in redact(repr(err)) and "u:***@h:5432" in redact(str(err))


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (f"postgresql+psycopg://user:{SECRET}@host/db", "postgresql+psycopg://user@host/db"),
        (f"https://:{SECRET}@host:8443/x", "https://host:8443/x"),
        ("postgresql://user:@host/db", "postgresql://user@host/db"),
        ("postgresql://u:p%40ss@[2001:db8::1]:5432/db", "postgresql://u@[2001:db8::1]:5432/db"),
        ("postgresql://u:a@b/c@h/db", "postgresql://u@h/db"),
        (f"postgresql://h/db?password={SECRET}", "postgresql://h/db"),
        (
            f"postgresql://h/db?password={SECRET}&sslmode=require",
            "postgresql://h/db?sslmode=require",
        ),
        (f"postgresql://h/db?a=1&pwd={SECRET}&b=2", "postgresql://h/db?a=1&b=2"),
        (f"postgresql://h/db?a=1&password={SECRET}", "postgresql://h/db?a=1"),
        (f"host=h password={SECRET} dbname=d", "host=h dbname=d"),
        (f"password={SECRET} host=h", "host=h"),
        ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
        (
            "postgresql+psycopg://postgres@127.0.0.1:55432",
            "postgresql+psycopg://postgres@127.0.0.1:55432",
        ),
    ],
)
def test_public_uri_drops_the_password(uri, expected):
    assert public_uri(uri) == expected


@pytest.mark.parametrize(
    "uri",
    [
        f"postgresql+psycopg://user:{SECRET}@host:5432/db",
        "postgresql+psycopg://user:p%40ss%2Fw@host/db",
        f"postgresql+psycopg://user:{SECRET}@[::1]:5432/db?sslmode=require",
    ],
)
def test_public_uri_keeps_everything_but_the_password(uri):
    # SQLAlchemy (what MLflow and Optuna parse these URLs with) is the oracle.
    before, after = make_url(uri), make_url(public_uri(uri))
    assert after.password is None
    assert before.password and before.password not in public_uri(uri)
    fields = ("drivername", "username", "host", "port", "database")
    assert [getattr(after, f) for f in fields] == [getattr(before, f) for f in fields]
    assert dict(after.query) == dict(before.query)
