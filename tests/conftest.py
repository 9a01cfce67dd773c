"""Shared fixtures: the real params.yaml, shrunk to a tiny CPU run on `digits`."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnc.config import Params, load_params
from pipelines.dvc.preset import load_preset  # importing pipelines turns telemetry off

ROOT = Path(__file__).resolve().parents[1]

TINY = load_preset(ROOT / "presets" / "tiny.yaml")  # the tiny run, shared with benchmarks


@pytest.fixture(scope="session")
def default_params() -> Params:
    """params.yaml exactly as committed."""
    return load_params(ROOT / "params.yaml")


@pytest.fixture()
def tiny_params(default_params: Params) -> Params:
    """The committed params shrunk to a seconds-long CPU run on digits."""
    return default_params.with_overrides(TINY)
