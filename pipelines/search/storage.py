"""Where a study lives: its RDB storage (with heartbeats and retry of dead workers' trials)
and the study-wide lock that makes taking a trial slot exact across processes."""

from __future__ import annotations

import contextlib
import fcntl
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from dnc.config import ConfigError
from dnc.io import derive_seed
from pipelines.common.network import network_timeout
from pipelines.search.space import SearchConfig


@contextlib.contextmanager
def quiet_experimental() -> Iterator[None]:
    """Silences Optuna's ExperimentalWarning for the block."""
    # Heartbeat retry and `fail_stale_trials` are stable in practice but still flagged.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


class StudyLock:
    """A cross-process lock on one study: flock on `<db>.lock` (SQLite) or a PostgreSQL
    advisory lock. `release` is idempotent so the objective can release it early."""

    def __init__(self, url: str, study_name: str) -> None:
        self.url = sqlalchemy.engine.make_url(url)
        self.shown = self.url.render_as_string(hide_password=True)
        # 31 bits, shifted to be signed: pg_advisory_lock's key must fit its int argument
        self.key = (derive_seed("optuna-study", study_name) >> 32) - (1 << 30)
        self._held: Any = None
        self._thread_lock = threading.Lock()
        if self.url.get_backend_name() == "postgresql":
            self._engine = sqlalchemy.create_engine(
                self.url,
                poolclass=sqlalchemy.NullPool,
                connect_args={"connect_timeout": network_timeout()},
            )

    def acquire(self) -> None:
        backend, db = self.url.get_backend_name(), self.url.database
        if backend == "postgresql":
            try:
                conn = self._engine.connect()
            except sqlalchemy.exc.SQLAlchemyError as err:
                reason = str(err.orig).strip().splitlines()[0]
                raise ConfigError(
                    f"search.storage: cannot connect to {self.shown}: {reason}"
                ) from None
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
            self._held = conn
        elif db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
            handle = open(f"{db}.lock", "a")  # noqa: SIM115 (held until release)
            fcntl.flock(handle, fcntl.LOCK_EX)
            self._held = handle
        else:
            self._thread_lock.acquire()
            self._held = self._thread_lock

    def release(self) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        if isinstance(held, sqlalchemy.Connection):
            held.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            held.close()
        elif held is self._thread_lock:
            held.release()
        else:
            fcntl.flock(held, fcntl.LOCK_UN)
            held.close()

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# What a wrong or unreachable `search.storage` raises: a malformed URL or unknown dialect
# (ArgumentError, NoSuchModuleError), a database that refuses (OperationalError), a missing
# driver, a file that cannot be opened, Optuna's own storage errors. Anything else is a bug.
STORAGE_SETTING_ERRORS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.SQLAlchemyError,
    ImportError,
    OSError,
    optuna.exceptions.OptunaError,
)


def open_storage(search: SearchConfig) -> RDBStorage:
    """RDB storage with heartbeats; a dead worker's trial is failed and queued again."""
    url = search.storage
    sqlite = url.startswith("sqlite")
    engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}}  # SQLite's lock wait
    if not sqlite:
        # A database that accepts the TCP connection but never answers must not hang a worker.
        bounded = url.startswith(("postgresql", "mysql"))
        connect = {"connect_timeout": network_timeout()} if bounded else {}
        engine_kwargs = {"pool_pre_ping": True, "connect_args": connect}
    try:
        with quiet_experimental():
            return RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=search.heartbeat_interval,
                grace_period=search.grace_period,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                    max_retry=search.max_retry, inherit_intermediate_values=True
                ),
            )
    except STORAGE_SETTING_ERRORS as err:  # a wrong URL or a store that does not answer
        shown = sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"search.storage: cannot open {shown}: {reason}") from None
