"""One bound on every network call of the pipelines: `DNC_NETWORK_TIMEOUT` seconds (default 30).

MLflow's HTTP client waits 120 s per request and retries 5 times with exponential backoff, a
PostgreSQL connection waits for the OS's TCP timeout, and Prefect's client 60 s per request: a
server that accepts connections but never answers would hold a stage for many minutes. Each
library gets the bound through its own setting, unless the user set that one explicitly.
"""

from __future__ import annotations

import math
import os

from dnc.config import ConfigError

VARIABLE = "DNC_NETWORK_TIMEOUT"
DEFAULT_SECONDS = 30
# A few retries absorb a restarting server; with a bounded timeout the worst case stays bounded
# ((retries + 1) x timeout plus backoff).
MLFLOW_RETRIES = 2
MLFLOW_BACKOFF = 1


def network_timeout() -> int:
    """`DNC_NETWORK_TIMEOUT` as whole seconds (>= 1); a bad value is a ConfigError naming it."""
    raw = os.environ.get(VARIABLE, "").strip()
    if not raw:
        return DEFAULT_SECONDS
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{VARIABLE}={raw!r}: not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{VARIABLE}={raw!r}: must be a positive number of seconds")
    return max(1, math.ceil(value))


def apply_network_timeout() -> int:
    """Pass the bound to MLflow's and Prefect's clients (environment, read per request);
    returns it. Settings the user gave explicitly win."""
    seconds = network_timeout()
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(seconds))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(MLFLOW_RETRIES))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", str(MLFLOW_BACKOFF))
    os.environ.setdefault("PREFECT_API_REQUEST_TIMEOUT", str(seconds))
    return seconds
