"""The MLflow tracking store: where runs live, and batched, fail-fast access to it.

`MLFLOW_TRACKING_URI`, default `sqlite:///mlflow.db` in the working directory; experiments
that dnc creates in a database store keep their artifacts under `mlartifacts/<experiment>`
(`DNC_ARTIFACT_ROOT`); a tracking server decides that itself. The experiment is
`MLFLOW_EXPERIMENT_NAME`, default `dnc`.
"""

from __future__ import annotations

import base64
import contextlib
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import mlflow
import sqlalchemy
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from dnc.config import ConfigError, Params
from pipelines.common.network import apply_network_timeout, network_timeout
from pipelines.common.redact import redact
from pipelines.tracking import schema

DEFAULT_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "dnc"
# Interruptions, not failures. TrialPruned is matched by name: pipelines must not need Optuna.
KILLED_BY = (KeyboardInterrupt, SystemExit)
KILLED_NAMES = frozenset({"TrialPruned"})
STOP_REASON = f"{schema.TAG}stop_reason"
REOPENED_AT = f"{schema.TAG}reopened_at_ms"  # a sign of life for `runs reap`
_BATCH = {"metrics": 1000, "params": 100, "tags": 100}  # MLflow's log_batch limits


class TrackingError(ConfigError):
    """The tracking store is unreachable or misconfigured (names the URI)."""


# What a wrong or unreachable URI raises: a connection or file error, MLflow's own error (an
# unknown scheme, a failed migration), a database driver's error or a driver not installed.
# Anything else is a bug and propagates as itself.
SETTING_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ImportError,
    mlflow.exceptions.MlflowException,
    sqlalchemy.exc.SQLAlchemyError,
)


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI`, else the SQLite file `mlflow.db` in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def _artifact_root(uri: str, experiment: str) -> str | None:
    """Local artifact folder for experiments created in a database store; a server decides
    itself (`--artifacts-destination`)."""
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    root = Path(os.environ.get("DNC_ARTIFACT_ROOT", "mlartifacts")).resolve()
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in experiment)
    return (root / safe).as_uri()


def _probe(uri: str, timeout: float) -> None:
    """Fail within `timeout` on a server or database that does not answer, through the API
    the run will use (a server whose /health answers may still hang on its REST API): MLflow
    itself retries for ~100 s (database) or minutes (HTTP) before giving up."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0]
    if scheme in ("http", "https"):
        name = urllib.parse.quote(os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT)
        base, headers = _basic_auth(uri)
        api = f"{base.rstrip('/')}/api/2.0/mlflow/experiments/get-by-name?experiment_name={name}"
        try:
            request = urllib.request.Request(api, headers=headers)
            urllib.request.urlopen(request, timeout=timeout).close()
        except urllib.error.HTTPError:
            pass  # it answered (e.g. 404: no such experiment yet): MLflow says what is wrong
        except (OSError, TimeoutError) as err:
            reason = getattr(err, "reason", err) or type(err).__name__
            raise ConnectionError(f"no answer within {timeout:g} s ({reason})") from None
    elif scheme in ("postgresql", "mysql", "mssql"):
        args = {"connect_timeout": int(timeout)} if scheme != "mssql" else {}
        engine = sqlalchemy.create_engine(uri, connect_args=args)
        try:
            engine.connect().close()
        finally:
            engine.dispose()
    elif scheme == "sqlite":
        _check_sqlite_writable(uri)


def _basic_auth(uri: str) -> tuple[str, dict[str, str]]:
    """The server URL without user info, and the basic-auth header MLflow would send (from
    the URL's user info, else MLFLOW_TRACKING_USERNAME/PASSWORD): urllib cannot take
    credentials inside the URL."""
    parts = urllib.parse.urlsplit(uri)
    user = urllib.parse.unquote(parts.username or "") or os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = urllib.parse.unquote(parts.password or "") or os.environ.get(
        "MLFLOW_TRACKING_PASSWORD", ""
    )
    base = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    if not user:
        return base, {}
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return base, {"Authorization": f"Basic {token}"}


def _check_sqlite_writable(uri: str) -> None:
    """A SQLite store needs a writable file and folder (its journal lives beside it): fail
    now, naming the path, instead of after MLflow's ~100 s of connection retries."""
    database = sqlalchemy.engine.make_url(uri).database
    if not database or database == ":memory:":
        return
    path = Path(database).absolute()
    try:
        _check_writable_folder(path.parent)
        if path.exists():
            open(path, "r+b").close()  # noqa: SIM115 (opened only to test the permission)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise PermissionError(f"{path}: the SQLite store cannot be written ({reason})") from None


def _check_writable_folder(folder: Path) -> None:
    """Create and remove a file in `folder`: `os.access` says yes to root on a read-only or
    virtual file system."""
    with tempfile.TemporaryFile(dir=folder, prefix=".dnc-write-test-"):
        pass


def _with_connect_timeout(uri: str, timeout: int) -> str:
    """A PostgreSQL/MySQL URI with a connection timeout for MLflow's own engine."""
    url = sqlalchemy.engine.make_url(uri)
    if url.get_backend_name() not in ("postgresql", "mysql") or "connect_timeout" in url.query:
        return uri
    return url.update_query_dict({"connect_timeout": str(timeout)}).render_as_string(
        hide_password=False
    )


def check_artifact_root(uri: str) -> None:
    """An explicitly set `DNC_ARTIFACT_ROOT` must be a folder this process can write, checked
    before any training (else the artifacts fail after all of it)."""
    raw = os.environ.get("DNC_ARTIFACT_ROOT")
    if not raw or uri.startswith(("http://", "https://", "databricks")):
        return
    try:
        Path(raw).mkdir(parents=True, exist_ok=True)
        _check_writable_folder(Path(raw))
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ConfigError(f"DNC_ARTIFACT_ROOT={raw}: cannot create or write ({reason})") from None


class Store:
    """A connected tracking store: experiments, runs and batched logging."""

    def __init__(self, uri: str | None = None) -> None:
        self.uri = uri or tracking_uri()
        self.client = MlflowClient(_with_connect_timeout(self.uri, network_timeout()))

    @classmethod
    def connect(cls, uri: str | None = None) -> Store:
        """Open the store and check it answers (creates/migrates a SQLite file)."""
        uri = uri or tracking_uri()
        timeout = apply_network_timeout()
        check_artifact_root(uri)
        try:
            _probe(uri, timeout)
            store = cls(uri)
            store.client.search_experiments(max_results=1)
        except SETTING_ERRORS as err:  # the URI is wrong or its store does not answer
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            # Never print a password: the URI and a driver's message may both hold it.
            raise TrackingError(redact(f"MLFLOW_TRACKING_URI={uri}: {reason}")) from None
        return store

    def experiment_id(self, name: str | None = None, parent_run_id: str | None = None) -> str:
        """The parent's experiment, else `name` (`MLFLOW_EXPERIMENT_NAME`, `dnc`), created
        on first use."""
        if parent_run_id:
            return self.client.get_run(parent_run_id).info.experiment_id
        name = name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name, _artifact_root(self.uri, name))
        except mlflow.exceptions.MlflowException:  # created meanwhile by a parallel run
            return self.client.get_experiment_by_name(name).experiment_id

    def log(
        self,
        run_id: str,
        epochs: dict[int, dict[str, float]] | None = None,
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        """Metrics ({step: {name: value}}), params and tags in as few `log_batch` calls as
        MLflow's per-call limits allow."""
        now = int(time.time() * 1000)
        items = {
            "metrics": [
                Metric(k, v, now, step) for step, m in (epochs or {}).items() for k, v in m.items()
            ],
            "params": [Param(k, v) for k, v in (params or {}).items()],
            "tags": [RunTag(k, v) for k, v in (tags or {}).items()],
        }
        while any(items.values()):
            chunk = {kind: items[kind][: _BATCH[kind]] for kind in items}
            items = {kind: items[kind][_BATCH[kind] :] for kind in items}
            self.client.log_batch(run_id, **chunk)

    def start_run(
        self,
        params: Params,
        tags: dict[str, str],
        run_name: str | None,
        parent_run_id: str | None,
    ) -> str:
        """A new RUNNING run with params and tags."""
        tags = dict(tags)
        if parent_run_id:
            tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
        run = self.client.create_run(
            self.experiment_id(parent_run_id=parent_run_id),
            run_name=run_name or schema.run_name(params),
            tags=tags,
        )
        self.log(run.info.run_id, params=schema.param_strings(params))
        return run.info.run_id

    def can_continue(self, run_id: str | None, params: Params) -> bool:
        """`run_id` exists in this store, is not deleted and was logged with these params."""
        if not run_id:
            return False
        try:
            run = self.client.get_run(run_id)
        except mlflow.exceptions.MlflowException:
            return False
        return run.info.lifecycle_stage == "active" and run.data.params == schema.param_strings(
            params
        )

    def reopen(self, run_id: str) -> None:
        """Mark a continued run RUNNING again, dropping the reason it stopped last time."""
        run = self.client.get_run(run_id)
        if STOP_REASON in run.data.tags:
            self.client.delete_tag(run_id, STOP_REASON)
        self.client.update_run(run_id, status="RUNNING")
        self.log(run_id, tags={REOPENED_AT: str(int(time.time() * 1000))})

    def logged_epochs(self, run_id: str) -> set[int]:
        """Steps of the `epoch` metric already in the run."""
        return {m.step for m in self.client.get_metric_history(run_id, "epoch")}

    def supersede(self, run_id: str, successor: str) -> None:
        """End a run left RUNNING by a killed process KILLED, naming the run replacing it."""
        try:
            if self.client.get_run(run_id).info.status != "RUNNING":
                return
        except mlflow.exceptions.MlflowException:  # not in this store (or deleted)
            return
        self.log(run_id, tags={STOP_REASON: f"superseded by run {successor}"})
        self.client.set_terminated(run_id, "KILLED")

    def end(self, run_id: str, error: BaseException | None = None) -> None:
        """FINISHED, KILLED (interrupted/pruned) or FAILED, with the error as a tag."""
        if error is None:
            self.client.set_terminated(run_id, "FINISHED")
            return
        killed = isinstance(error, KILLED_BY) or type(error).__name__ in KILLED_NAMES
        reason = redact(f"{type(error).__name__}: {error}")[:4000]
        with contextlib.suppress(Exception):  # the status below matters more than the tag
            self.log(run_id, tags={STOP_REASON: reason})
        self.client.set_terminated(run_id, "KILLED" if killed else "FAILED")
