"""Tracked stage runs: what every entry point (DVC stage, Prefect task, Optuna trial) calls.

Each function calls the one implementation in `dnc.stages` and adds the orchestration-side
concerns (the tracker of `pipelines.tracking.base`, MLflow by default), so DVC, Prefect and
Optuna runs are identical apart from the `entry_point` tag they record. Tracking is on unless the
environment says `DNC_TRACKING=off`; the tracker's library is imported only when it is on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from dnc import stages
from dnc.config import Params
from dnc.train.callbacks import FitResult
from pipelines.tracking.base import get_tracker


def prepare(params: Params, out_dir: Path) -> dict:
    """Dataset -> hashed tensors in `out_dir`."""
    return stages.prepare(params, Path(out_dir))


def resumable(run_dir: Path, params: Params) -> bool:
    """Whether `run_dir` holds a training of exactly these params to resume: a persistent
    DVC output (or a retried search trial) keeps its `last.pt` across a kill, but a folder
    trained with other params is retrained from scratch, not continued."""
    saved = Path(run_dir) / "params.json"
    try:
        return json.loads(saved.read_text()) == params.model_dump(mode="json")
    except (OSError, ValueError):  # none yet, or cut short by a kill
        return False


def train(
    params: Params,
    data_dir: Path | None,
    out_dir: Path,
    *,
    entry_point: str,
    callbacks: Sequence[object] = (),
    resume: bool = True,
    parent_run_id: str | None = None,
    run_name: str | None = None,
    config: str | None = None,
) -> FitResult:
    """Co-train with the given extra engine callbacks (e.g. Optuna pruning), tracked as one
    MLflow run (nested under `parent_run_id` if given; continued on resume)."""
    out_dir = Path(out_dir)
    # Imports the tracker's library (MLflow: ~2 s) only when on; under torchrun rank 0 tracks.
    tracker = get_tracker() if os.environ.get("RANK", "0") == "0" else None
    if tracker is None:
        return stages.train(params, data_dir, out_dir, callbacks=list(callbacks), resume=resume)
    run = tracker.training_run(
        params,
        out_dir,
        data_dir,
        entry_point=entry_point,
        parent_run_id=parent_run_id,
        run_name=run_name,
        config=config,
    )
    with run.guard():
        # Tracking first: an epoch is logged before a pruning callback may stop the run.
        result = stages.train(
            params, data_dir, out_dir, callbacks=[run, *callbacks], resume=resume
        )
        run.finish(result)
    return result


def evaluate(
    params: Params,
    data_dir: Path | None,
    model_dir: Path,
    out_path: Path,
    *,
    entry_point: str,
    parent_run_id: str | None = None,
    run_name: str | None = None,
    log_model: bool = True,
    devices: Sequence[str] | None = None,
    config: str | None = None,
    allow_incomplete: bool = False,
) -> dict:
    """Test metrics of the selected checkpoint, written to `out_path` and logged (with the
    model unless `log_model=False`) to the training's MLflow run. `devices`,
    `allow_incomplete`: see `dnc.stages.evaluate` (metrics["training"]["complete"])."""
    tracker = get_tracker()  # connects before the evaluation's compute
    metrics = stages.evaluate(
        params, data_dir, Path(model_dir), Path(out_path), devices, allow_incomplete
    )
    if tracker is not None:
        tracker.log_evaluation(
            params,
            data_dir,
            model_dir,
            out_path,
            metrics,
            entry_point=entry_point,
            parent_run_id=parent_run_id,
            run_name=run_name,
            log_model=log_model,
            config=config,
        )
    return metrics
