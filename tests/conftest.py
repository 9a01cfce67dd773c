"""Shared fixtures: the real params.yaml, shrunk to a tiny CPU run on `digits`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dnc.config import Params, load_params

ROOT = Path(__file__).resolve().parents[1]

for _key, _value in {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
}.items():
    os.environ.setdefault(_key, _value)

TINY = {
    "data.dataset": "digits",
    "data.val_size": 200,
    "data.train_size": None,
    "data.test_size": 256,
    "model.name": "small_cnn",
    "model.width": 8,
    "split.factor": 2,
    "train.epochs": 2,
    "train.batch_size": 64,
    "train.warmup_epochs": 0.5,
    "train.cot_warmup_epochs": 1,
    "train.device": "cpu",
    "train.progress": False,
    "eval.batch_size": 128,
    "eval.latency_batch_sizes": [1, 8],
    "eval.latency_repeats": 2,
}


@pytest.fixture(scope="session")
def default_params() -> Params:
    """params.yaml exactly as committed."""
    return load_params(ROOT / "params.yaml")


@pytest.fixture()
def tiny_params(default_params: Params) -> Params:
    """The committed params shrunk to a seconds-long CPU run on digits."""
    return default_params.with_overrides(TINY)
