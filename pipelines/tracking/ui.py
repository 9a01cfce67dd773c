"""`python -m pipelines ui`: the MLflow UI on dnc's store, as a light server.

`mlflow ui` as it ships starts a job-execution backend and several workers (15 processes,
~2.9 GB, ~23 s to healthy, measured); one uvicorn worker with job execution off serves the same
UI in 2 processes, ~490 MB, ~7.5 s. Binds 127.0.0.1; Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from dnc.config import ConfigError


def server_command(uri: str, port: int, artifacts: Path) -> tuple[list[str], dict[str, str]]:
    """The `mlflow server` command line and environment for store `uri` on `port`."""
    if uri.startswith(("http://", "https://")):
        raise ConfigError(f"MLFLOW_TRACKING_URI={uri}: already a server; open it in a browser")
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        uri,
        # Only for experiments created in the UI; dnc's own name theirs (mlartifacts/<name>).
        "--artifacts-destination",
        str(artifacts),
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return cmd, env


def _run(args: argparse.Namespace) -> int:
    from pipelines.tracking.store import tracking_uri  # imports MLflow: not for --help

    uri = args.tracking_uri or tracking_uri()
    cmd, env = server_command(uri, args.port, Path(args.artifacts))
    print(f"MLflow UI on {uri}: http://127.0.0.1:{args.port} (Ctrl-C stops it)", flush=True)
    try:
        return subprocess.run(cmd, env=env, check=False).returncode
    except KeyboardInterrupt:  # the server got the same Ctrl-C and stops by itself
        return 0


def add(p: argparse.ArgumentParser) -> None:
    """`python -m pipelines ui`."""
    p.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1")
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="tracking store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )
    p.add_argument(
        "--artifacts",
        default=os.environ.get("DNC_ARTIFACT_ROOT", "mlartifacts"),
        help="artifact folder of experiments created in the UI (default: $DNC_ARTIFACT_ROOT "
        "or mlartifacts)",
    )
    p.set_defaults(func=_run)
