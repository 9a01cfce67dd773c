"""Shared fixtures: the real params.yaml, shrunk to a tiny CPU run on `digits`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from dnc.config import Params
from dnc.config_loading import load_params
from pipelines.dvc.preset import load_preset  # importing pipelines turns telemetry off

ROOT = Path(__file__).resolve().parents[1]

TINY = load_preset(ROOT / "presets" / "tiny.yaml")  # the tiny run, shared with benchmarks

# Subprocesses the tests start (dnc, dvc, workers) inherit one thread too: on 2 cores a
# tiny train + evaluate took 3 s with 1 thread and 40 s with 2 under load.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Every test runs torch on one thread (restored afterwards)."""
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


@pytest.fixture(scope="session")
def default_params() -> Params:
    """params.yaml exactly as committed."""
    return load_params(ROOT / "params.yaml")


@pytest.fixture()
def tiny_params(default_params: Params) -> Params:
    """The committed params shrunk to a seconds-long CPU run on digits."""
    return default_params.with_overrides(TINY)
