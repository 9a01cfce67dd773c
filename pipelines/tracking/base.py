"""What the stage runner and the search need of an experiment tracker, and which one is on.

`DNC_TRACKING` picks it: `on` (default) or a tracker's name from `TRACKERS`, or `off`.
Another tracker (e.g. a W&B or a plain-file one) is one module with a class that satisfies
`Tracker`, plus one line in `TRACKERS`; nothing here imports a tracker library.
"""

from __future__ import annotations

import importlib
import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from dnc.config import ConfigError, Params

# name -> "module:class"; `on` means the first
TRACKERS: dict[str, str] = {"mlflow": "pipelines.tracking.mlflow_tracker:MLflowTracker"}


class TrainingTracker(Protocol):
    """One training as seen by a tracker: an engine callback (`on_fit_start`,
    `on_epoch_end`, `on_fit_end`, `on_fit_error`) that also ends its run."""

    def guard(self) -> AbstractContextManager[None]:
        """Ends the run FAILED/KILLED if the block raises (SIGTERM included)."""

    def finish(self, result: Any) -> None:
        """Ends the run after a completed fit."""


class Tracker(Protocol):
    """An experiment tracker: a run per training (continued by its evaluation) and a parent
    run per search study."""

    def training_run(
        self, params: Params, out_dir: Path, data_dir: Path | None, **how: str | None
    ) -> TrainingTracker:
        """The run of one training (`how`: entry_point, parent_run_id, run_name);
        connecting fails here, before any compute."""

    def log_evaluation(
        self,
        params: Params,
        data_dir: Path | None,
        model_dir: Path,
        out_path: Path,
        metrics: dict,
        **how: Any,
    ) -> str:
        """Test metrics, files and (if `how["log_model"]`) the model on the training's run."""

    def open_study_run(
        self, study_name: str, tags: dict[str, str], params: dict[str, str], run_id: str | None
    ) -> str:
        """The (new or continued) parent run of a search study, RUNNING."""

    def close_study_run(
        self, run_id: str, metrics: dict[str, float], files: list[Path], finished: bool
    ) -> None:
        """The study's summary metrics and reports; ended if `finished`."""

    def discard_study_run(self, run_id: str) -> None:
        """Remove a parent run that lost the race to another worker's."""


def tracker_name() -> str | None:
    """The tracker `DNC_TRACKING` asks for (None: off); a setting error for anything else."""
    value = os.environ.get("DNC_TRACKING", "on").strip().lower()
    if value == "off":
        return None
    if value == "on":
        return next(iter(TRACKERS))
    if value not in TRACKERS:
        raise ConfigError(f"DNC_TRACKING={value!r}: expected on, off or {', '.join(TRACKERS)}")
    return value


def get_tracker() -> Tracker | None:
    """The tracker that is on (its library imported only now), or None."""
    name = tracker_name()
    if name is None:
        return None
    module, _, cls = TRACKERS[name].partition(":")
    return getattr(importlib.import_module(module), cls)()
