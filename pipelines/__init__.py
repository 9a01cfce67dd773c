"""Orchestration around the `dnc` library: DVC stage entry points, Prefect flows and
deployments, MLflow tracking, Optuna search, reports and plots.

Imports `dnc`; `dnc` never imports this package.
"""

import os

# Telemetry off for every orchestration tool, before any of them is imported (MLflow and
# Prefect read these at import time); an explicit setting in the environment wins.
for _key, _value in {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
}.items():
    os.environ.setdefault(_key, _value)

from dnc.config_loading import declare_sections  # noqa: E402  (after the telemetry switches)

# The params.yaml sections the pipelines own: the comparison matrix and the Optuna search.
declare_sections("compare", "search")
