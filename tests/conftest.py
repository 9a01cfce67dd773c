"""Shared fixtures: the real params.yaml shrunk to a tiny CPU run on `digits`; a Prefect server."""

from __future__ import annotations

import importlib
import multiprocessing.util
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
import servers

from dnc.config import Params
from dnc.config_loading import load_params
from pipelines.dvc.preset import load_preset  # importing pipelines turns telemetry off

ROOT = Path(__file__).resolve().parents[1]

TINY = load_preset(ROOT / "presets" / "tiny.yaml")  # the tiny run, shared with benchmarks

# A search section of 3 quick trials over S, width and co-training weight, shared by the
# search and worker tests (merged into params.yaml's `search`).
SEARCH = {
    "n_trials": 3,
    "startup_trials": 2,
    "storage": "sqlite:///optuna.db",
    "heartbeat_interval": 1,
    "grace_period": 2,
    "budget": {"macs": None, "params": None, "train_macs": None, "train_seconds": None},
    "space": {
        "split.factor": {"choices": [1, 2, 4]},
        "model.width": {"low": 4, "high": 8, "step": 4},
        "train.cot_weight": {"low": 0.0, "high": 1.0},
    },
}

# Subprocesses the tests start (dnc, dvc, workers) inherit one thread too: on 2 cores a
# tiny train + evaluate took 3 s with 1 thread and 40 s with 2 under load.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# An environment may set PYTHONDONTWRITEBYTECODE (this machine's does). Without cached
# bytecode every test process recompiles dnc's and the pipelines' modules (~0.4 s per CLI
# process, ~100 of them) and pytest rewrites every test file again (~3.5 s per xdist
# worker). Python's default is back for the tests and their subprocesses; __pycache__/ is
# git-ignored, and a stale file is recompiled from its source as usual.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Every test runs torch on one thread (restored afterwards)."""
    import torch  # imported by pytest_configure, below

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _mlflow_global_uri():
    utils = sys.modules.get("mlflow.tracking._tracking_service.utils")
    return getattr(utils, "_tracking_uri", None)


@pytest.fixture(autouse=True)
def no_leaked_tracking_uri():
    """A test that points MLflow's process-wide tracking URI elsewhere and leaves it there
    silently redirects every later test's `runs:/` lookups: fail the leaking test instead."""
    before = _mlflow_global_uri()
    yield
    after = _mlflow_global_uri()
    if after != before:
        sys.modules["mlflow.tracking._tracking_service.utils"]._tracking_uri = before
        pytest.fail(f"test left MLflow's global tracking URI set to {after!r}")


# Test tiers (docs/testing.md). `slow` marks the end-to-end tier, `integration` the tests that
# start processes or servers; every other test is a unit test, and is held to it: while it
# runs (its fixtures included) starting a process or touching a TCP socket fails it.
TIERS = {"e2e": "slow", "integration": "integration"}
# Probes libraries make once, at import, that are no test's doing: `platform.processor()`
# runs `uname -p` (MLflow's import calls it) and urllib3 binds [::1]:0 to detect IPv6. Done
# here, before any guard, so the first unit test to import MLflow or requests is not blamed.
platform.processor()
importlib.import_module("urllib3.util.connection")


def tier_of(item: pytest.Item) -> str:
    if item.get_closest_marker("postgres") and not item.get_closest_marker("slow"):
        return "integration"  # libpq's sockets are C-level: the guard below cannot see them
    return next((t for t, mark in TIERS.items() if item.get_closest_marker(mark)), "unit")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its tier, so `-m unit`, `-m integration`, `-m e2e` select one."""
    for item in items:
        item.add_marker(tier_of(item))


class TierViolation(RuntimeError):
    pass


def _refuse(what: str, original):
    def guarded(*args, **kwargs):
        sock = args[0] if args else None
        if isinstance(sock, socket.socket) and sock.family not in TCP_FAMILIES:
            return original(*args, **kwargs)  # Unix sockets and socketpairs stay local
        if threading.current_thread() is not threading.main_thread():
            # A background thread an earlier integration test left (a Prefect or MLflow
            # client's worker): not this test's doing. A test's own code runs in the main one.
            return original(*args, **kwargs)
        frames = [f for f in traceback.extract_stack()[:-1] if "conftest" not in f.filename]
        ours = [f for f in frames if f.filename.startswith(PROJECT) and ".venv" not in f.filename]
        caller = (ours or frames or [None])[-1]  # the project's own line, else the innermost
        where = f" ({caller.filename}:{caller.lineno})" if caller else ""
        _VIOLATIONS.append(what + where)
        raise TierViolation(f"a unit test {what}{where}: mark it `integration` (or `slow`)")

    return guarded


TCP_FAMILIES = (socket.AF_INET, socket.AF_INET6)
PROJECT = str(ROOT)
_VIOLATIONS: list[str] = []
_GUARDED = [
    (subprocess.Popen, "_execute_child", "started a process"),
    (os, "fork", "forked"),
    (multiprocessing.util, "spawnv_passfds", "spawned a process"),
    (socket.socket, "connect", "opened a TCP connection"),
    (socket.socket, "connect_ex", "opened a TCP connection"),
    (socket.socket, "bind", "bound a TCP port"),
]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem):
    """A unit test (and the fixtures it sets up) may not start processes or use TCP."""
    if tier_of(item) != "unit":
        yield
        return
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in _GUARDED]
    for (owner, name, what), (_, _, original) in zip(_GUARDED, saved, strict=True):
        setattr(owner, name, _refuse(what, original))
    try:
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


@pytest.fixture(autouse=True)
def unit_tier_is_kept():
    """Fails a unit test that swallowed a TierViolation."""
    _VIOLATIONS.clear()
    yield
    if _VIOLATIONS:
        pytest.fail(f"a unit test {_VIOLATIONS[0]}: mark it `integration` (or `slow`)")


class lazy:  # noqa: N801 (stands in for a module)
    """A module imported on first attribute use: `flows = lazy("pipelines.prefect.flows")`
    keeps Prefect out of every xdist worker's collection (each collects every file; ~3 s)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str):
        if attr.startswith("_"):  # pytest probing what it collects (`__test__`, ...)
            raise AttributeError(attr)
        return getattr(importlib.import_module(self._name), attr)


def deep_variant(name: str) -> bool:
    """The 110-272-layer variants: a meta-device pass or FLOP count takes seconds each. The
    quick tiers cover their families at shallow depth (same code); the e2e tier runs them."""
    return any(depth in name for depth in ("110", "164", "272"))


def every_model(heavy=deep_variant) -> list:
    """Every registered model as a parameter, the `heavy` ones in the e2e tier."""
    from dnc.models import list_models

    return [pytest.param(n, marks=pytest.mark.slow) if heavy(n) else n for n in list_models()]


def every_model_and_split(splits: tuple[int, ...], heavy=deep_variant) -> list:
    """(model, S) for every registered model and each of `splits`; a `heavy` model only at
    the last S, in the e2e tier: its family's code runs at every S at shallow depth, so
    each further S of a deep twin repeats the same code for seconds."""
    from dnc.models import list_models

    return [
        pytest.param(n, splits[-1], marks=pytest.mark.slow) if heavy(n) else (n, s)
        for n in list_models()
        for s in (splits[-1:] if heavy(n) else splits)
    ]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--record-costs",
        action="store_true",
        help="write each test file's CPU seconds to tests/costs.json (tests/scheduling.py)",
    )


def pytest_configure(config: pytest.Config) -> None:
    servers.open_run_dir()  # in the controller; the xdist workers inherit its folder
    if os.environ.get("PYTEST_XDIST_WORKER") or config.getoption("dist", "no") == "no":
        # In a process that runs tests, before any unit test's guard: importing torch runs
        # `ldconfig` (ctypes.util.find_library). Not in the xdist controller, which runs
        # no test: there it cost ~4 s before the workers started and ~1.3 s at exit.
        import torch  # noqa: F401
    if config.getoption("record_costs"):
        import scheduling

        config.pluginmanager.register(scheduling.Recorder(), "dnc-cost-recorder")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`--dist loadfile`: the costliest files first (tests/scheduling.py)."""
    if config.getvalue("dist") == "loadfile":
        import scheduling

        return scheduling.CostFirst(config, log)
    return None


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER"):  # after every worker has finished
        servers.close_run_dir()
        recorder = session.config.pluginmanager.get_plugin("dnc-cost-recorder")
        if recorder is not None and session.testsfailed == 0:
            recorder.write()


def _migrated_mlflow_db(path: Path) -> None:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    SqlAlchemyStore(f"sqlite:///{path}", str(path.parent / "mlartifacts")).engine.dispose()


@pytest.fixture(scope="session")
def mlflow_db_template() -> Path:
    """An empty MLflow SQLite store, migrated once per run (~2 CPU-s each time a fresh
    store is migrated): copy it where a test's tracking URI points."""
    return servers.once_per_run("mlflow.db", _migrated_mlflow_db)


@pytest.fixture()
def sqlite_tracking_uri(tmp_path, mlflow_db_template) -> str:
    """The URI of a fresh, empty MLflow SQLite store in this test's folder."""
    shutil.copyfile(mlflow_db_template, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="session")
def default_params() -> Params:
    """params.yaml exactly as committed."""
    return load_params(ROOT / "params.yaml")


@pytest.fixture()
def tiny_params(default_params: Params) -> Params:
    """The committed params shrunk to a seconds-long CPU run on digits."""
    return default_params.with_overrides(TINY)


@pytest.fixture(scope="session")
def _prefect_api() -> Iterator[None]:
    """The run's one Prefect server (tests/servers.py), for this test process's Prefect
    client; every test reads back only the flow runs it made itself."""
    import prefect.context
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: servers.shared_prefect_server()}):
        # Prefect's background threads (events, logs) read the process-global settings, not
        # this context: without them they would start an ephemeral server of their own.
        # prefect_test_harness does the same with this helper (Prefect is pinned).
        settings = prefect.context.get_settings_context()
        with prefect.context._temporary_global_settings_context(settings):
            yield


@pytest.fixture(scope="module")
def prefect_server(_prefect_api, tmp_path_factory: pytest.TempPathFactory):
    """The Prefect test server, with this module's own PREFECT_HOME (results, cache)."""
    from prefect.settings import PREFECT_HOME, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    home = tmp_path_factory.mktemp("prefect-home")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DNC_TRACKING", "off")  # MLflow is not under test here
        settings = {PREFECT_HOME: home, PREFECT_LOCAL_STORAGE_PATH: home / "storage"}
        with temporary_settings(updates=settings):
            yield


class _Current:
    """A stream that is always the current `sys.<name>` (pytest swaps them per test)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(getattr(sys, self._name), attr)


@pytest.fixture()
def dvc_here(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]):
    """`dvc ARGS` in this process: DVC's own `main`, run in `cwd` with `env` set (restored
    after the test); its output, captured at the file descriptors, or the test fails with
    it. A `dvc` process costs ~1.5 CPU-s of imports per command; the stages a repro runs
    are processes either way."""
    import logging

    import dvc.logger
    from dvc.cli import main

    # `import dvc` binds its log handlers to the sys.stdout / sys.stderr of that moment (a
    # capture pytest later closes, if a test imported it): point them at whatever sys.stdout
    # / sys.stderr is when they write, for this test and the worker's later ones.
    for name in ("dvc", "dvc_objects", "dvc_data"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, dvc.logger.LoggerHandler):
                handler.stream = _Current(
                    "stderr" if handler.level >= logging.WARNING else "stdout"
                )

    def run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        monkeypatch.chdir(cwd)
        capfd.readouterr()
        rc = main(list(args))
        captured = capfd.readouterr()
        out = captured.out + captured.err
        assert rc == 0, f"dvc {' '.join(args)} -> {rc}\n{out}"
        return out

    return run


@pytest.fixture()
def cli_here(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]):
    """`python -m pipelines ARGV` in this process: the CLI's `main` with `env` set and the
    names in `unset` removed (both restored after the test), run in `cwd`, its output
    captured at the file descriptors. The same code and the same lines as a subprocess,
    without importing torch and MLflow again (~5 CPU-s a process); tests of what only a
    process shows (exit by signal, a fresh interpreter's imports) keep the subprocess."""
    from pipelines.cli import main

    def run(argv: list[str], env: dict[str, str], cwd: Path, unset=()) -> tuple[int, str]:
        for key in unset:
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.chdir(cwd)
        capfd.readouterr()
        rc = main(list(argv))
        captured = capfd.readouterr()
        return rc, captured.out + captured.err

    return run
