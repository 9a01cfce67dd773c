"""Deployments: `prefect.yaml` declares them; `serve` runs them here without a work pool.

`prefect.yaml` is the one declaration of the deployments (name, entrypoint, default
parameters, concurrency). Two ways to run them against a Prefect server:
- `python -m pipelines serve`: this module turns each declared deployment into
  `flow.to_deployment(...)` and serves them all from one process (runs execute as subprocesses);
- `prefect deploy --all` + `prefect worker start --pool dnc-local`: Prefect's own reading of
  the same file, for workers on other machines.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import yaml

from dnc.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]
PREFECT_YAML = ROOT / "prefect.yaml"


class DeploymentError(ConfigError):
    """A declared deployment that cannot be served (names it and its entrypoint)."""


def declared(path: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    """The `deployments:` entries of a prefect.yaml."""
    entries = (yaml.safe_load(Path(path).read_text()) or {}).get("deployments") or []
    for i, entry in enumerate(entries):
        for key in ("name", "entrypoint"):
            if not entry.get(key):
                raise DeploymentError(f"{path}: deployments[{i}].{key}: missing key")
    return entries


def load_entrypoint(entrypoint: str) -> Any:
    """`pipelines/prefect/flows.py:experiment_flow` -> the flow object (imported as a module,
    so the package's absolute imports resolve as everywhere else)."""
    file, _, name = entrypoint.partition(":")
    module = file.removesuffix(".py").replace("/", ".")
    return getattr(importlib.import_module(module), name)


def runner_deployments(entries: list[dict[str, Any]], only: list[str] | None = None) -> list:
    """`flow.to_deployment(...)` of each entry (filtered by `flow/name`). An entry whose
    entrypoint cannot be imported stops everything with an error naming it: serving the
    others would hide it until somebody misses its runs."""
    out = []
    wanted_names = {o.rpartition("/")[2] for o in only or []}
    for entry in entries:
        if only and entry["name"] not in wanted_names:
            continue  # not asked for: not imported either
        try:
            flow = load_entrypoint(entry["entrypoint"])
        except (ImportError, AttributeError) as err:
            raise DeploymentError(
                f"deployment {entry['name']!r} ({entry['entrypoint']}): cannot load its flow: "
                f"{type(err).__name__}: {err}"
            ) from err
        full_name = f"{flow.name}/{entry['name']}"
        if only and full_name not in only:
            continue
        out.append(
            flow.to_deployment(
                name=entry["name"],
                description=entry.get("description"),
                tags=entry.get("tags"),
                parameters=entry.get("parameters") or {},
                concurrency_limit=entry.get("concurrency_limit"),
            )
        )
    return out


def serve(
    path: Path = PREFECT_YAML, only: list[str] | None = None, limit: int = 1, poll: float = 1
) -> None:
    """Serve the declared deployments from the project root until interrupted."""
    from prefect import serve as prefect_serve
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        # Served runs against the ephemeral server hang (docs/prefect.md): demand a real one.
        raise DeploymentError(
            "PREFECT_API_URL is not set: start `prefect server start --host 127.0.0.1` and "
            "export PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    os.chdir(Path(path).resolve().parent)  # entrypoints and default paths are project-relative
    deployments = runner_deployments(declared(path), only)
    if not deployments:
        raise DeploymentError(f"{path}: no deployment to serve (only={only})")
    prefect_serve(*deployments, limit=limit, query_seconds=poll)
