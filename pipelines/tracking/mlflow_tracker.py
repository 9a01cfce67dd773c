"""The MLflow `Tracker`: training runs (`mlflow_run.TrainingRun`), evaluations continuing
them, and the parent run of a search study, all in the store of `MLFLOW_TRACKING_URI`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dnc.config import Params
from pipelines.tracking import mlflow_run
from pipelines.tracking.store import Store


class MLflowTracker:
    """`pipelines.tracking.base.Tracker` on MLflow; connects (and fails fast) on creation."""

    def __init__(self, uri: str | None = None) -> None:
        self.store = Store.connect(uri)  # a bad store URI fails here, before any compute

    def training_run(
        self, params: Params, out_dir: Path, data_dir: Path | None, **how: str | None
    ) -> mlflow_run.TrainingRun:
        """The MLflow run of one training (an engine callback)."""
        return mlflow_run.TrainingRun(self.store, params, out_dir, data_dir, **how)

    def log_evaluation(
        self,
        params: Params,
        data_dir: Path | None,
        model_dir: Path,
        out_path: Path,
        metrics: dict,
        **how: Any,
    ) -> str:
        """Test metrics, files and the model on the training's run; ends it."""
        return mlflow_run.log_evaluation(
            self.store, params, data_dir, model_dir, out_path, metrics, **how
        )

    def open_study_run(
        self, study_name: str, tags: dict[str, str], params: dict[str, str], run_id: str | None
    ) -> str:
        """The study's parent run: created on first use, RUNNING again when continued."""
        if run_id is None:
            run = self.store.client.create_run(
                self.store.experiment_id(), run_name=f"search/{study_name}", tags=tags
            )
            run_id = run.info.run_id
            self.store.log(run_id, params=params)
        self.store.reopen(run_id)
        return run_id

    def close_study_run(
        self, run_id: str, metrics: dict[str, float], files: list[Path], finished: bool
    ) -> None:
        """Summary metrics and report files on the parent run; FINISHED if `finished`."""
        self.store.log(run_id, epochs={0: metrics})
        for path in files:
            self.store.client.log_artifact(run_id, str(path), "search")
        if finished:
            self.store.end(run_id)

    def discard_study_run(self, run_id: str) -> None:
        """Delete a parent run created in parallel with another worker's (that one is kept)."""
        self.store.client.set_terminated(run_id, "KILLED")
        self.store.client.delete_run(run_id)
