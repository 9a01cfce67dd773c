"""Tracked stage runs: what every entry point (DVC stage, Prefect task, Optuna trial) calls.

Each function calls the one implementation in `dnc.stages` and adds the orchestration-side
concerns (experiment tracking callbacks), so DVC, Prefect and Optuna runs are identical
apart from the `entry_point` tag they record.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dnc import stages
from dnc.config import Params
from dnc.engine import FitResult


def prepare(params: Params, out_dir: Path) -> dict:
    """Dataset -> hashed tensors in `out_dir`."""
    return stages.prepare(params, Path(out_dir))


def train(
    params: Params,
    data_dir: Path | None,
    out_dir: Path,
    *,
    entry_point: str,
    callbacks: Sequence[object] = (),
    resume: bool = True,
) -> FitResult:
    """Co-train with the given extra engine callbacks (e.g. Optuna pruning)."""
    return stages.train(params, data_dir, Path(out_dir), callbacks=list(callbacks), resume=resume)


def evaluate(
    params: Params, data_dir: Path | None, model_dir: Path, out_path: Path, *, entry_point: str
) -> dict:
    """Test metrics of the selected checkpoint, written to `out_path`."""
    return stages.evaluate(params, data_dir, Path(model_dir), Path(out_path))
