"""Real servers for the tests: free ports, processes in their own group, files built once
per test run, and the one Prefect server that a run's test processes share.

Every xdist worker is its own pytest session, so a session fixture alone would start one
Prefect server per worker (~6 CPU-s to start and ~1 CPU-s a minute idle, on 2 cores). The
controller (or the only process, without xdist) makes a folder for the run in
`pytest_configure` and hands it to the workers in `DNC_TEST_RUN_DIR`; the first test that
needs the server starts it there, under a file lock, and the controller stops it in
`pytest_sessionfinish`, after every worker has finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

RUN_DIR = "DNC_TEST_RUN_DIR"
PREFECT = str(Path(sys.executable).with_name("prefect"))
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A child in its own process group, so stopping it stops its children too."""
    out = log.open("w")
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(proc: subprocess.Popen, grace: float = 20) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Until the server at `url` answers its `/health` check (or `proc` exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server exited:\n{log.read_text()[-2000:]}"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"no healthy server at {url} after {timeout} s")


def open_run_dir() -> None:
    """The run's shared folder, made once by the controller; the workers inherit it."""
    if RUN_DIR not in os.environ:
        os.environ[RUN_DIR] = tempfile.mkdtemp(prefix="dnc-test-run-")


def close_run_dir() -> None:
    """Stop the shared Prefect server and remove the run's folder (controller only)."""
    folder = Path(os.environ.pop(RUN_DIR))
    state = folder / "prefect-server.json"
    if state.exists():
        _stop_group(json.loads(state.read_text())["pid"])
    shutil.rmtree(folder, ignore_errors=True)


def once_per_run(name: str, build: Callable[[Path], None]) -> Path:
    """File `name` in the run's folder, built by `build(path)` by whichever test process
    asks first; the others wait on the lock, then reuse it."""
    path = Path(os.environ[RUN_DIR]) / name
    with FileLock(f"{path}.lock"):
        if not path.exists():
            partial = path.with_name(f"partial-{name}")
            build(partial)
            partial.rename(path)  # a reader never sees a half-built file
    return path


def shared_prefect_server() -> str:
    """The API URL of the run's one Prefect server, started by the first test process that
    asks; every test reads back only its own runs."""
    folder = Path(os.environ[RUN_DIR])
    state = folder / "prefect-server.json"
    with FileLock(f"{state}.lock"):
        if state.exists():
            return json.loads(state.read_text())["url"]
        database = folder / "prefect.db"
        proc, url, _ = start_prefect(database, folder / "prefect-home", folder / "prefect.log")
        state.write_text(json.dumps({"url": url, "pid": proc.pid}))
    return url


def start_prefect(
    database: Path, home: Path, log: Path, **env: str
) -> tuple[subprocess.Popen, str, dict[str, str]]:
    """`prefect server start` on a free 127.0.0.1 port over SQLite `database`, with its own
    PREFECT_HOME and `env` on top; returned once healthy, with its API URL and the
    environment it runs with (its clients add PREFECT_API_URL to it)."""
    port = free_port()
    full = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{database}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "true",
        **env,
    }
    full.pop("PREFECT_API_URL", None)
    cmd = [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    proc = start(cmd, full, log)
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_healthy(url, proc, log)
    except BaseException:
        stop(proc)
        raise
    return proc, url, full


def _stop_group(pid: int, grace: float = 20) -> None:
    """SIGTERM the process group `pid` leads, SIGKILL it if it outlives `grace` seconds."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):  # without xdist, it is our child: reap
            os.waitpid(pid, os.WNOHANG)
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(pid, signal.SIGKILL)
