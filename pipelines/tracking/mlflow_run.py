"""MLflow tracking of every dnc run: an engine callback plus the run's lifecycle.

One MLflow run per trained model, whatever started it (DVC stage, Prefect task, Optuna
trial). It spans training and evaluation even when they run in separate processes: the run
id is kept in the checkpoint (`TrainState.extra`, so a resumed training continues it) and in
`<run dir>/mlflow_run.json` (so evaluation continues it). A run whose params no longer match
(resumed or re-evaluated with changed params) is not rewritten: a new run is started, with
the history backfilled and a `dnc.previous_run_id` tag. A run that raises ends FAILED, one
interrupted (Ctrl-C, SIGTERM, Optuna pruning) ends KILLED; none is left RUNNING. Metrics
are sent once per epoch in one batched call, never per step. The store: `tracking_store`.
The evaluation's served model is logged by `pipelines.tracking.logged_model.log_model`.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dnc.config import Params
from dnc.evaluation.predictions import predictions_path
from dnc.io import write_json
from dnc.train import checkpoint
from dnc.train.callbacks import FitResult, TrainState
from pipelines.common.redact import public_uri, redact
from pipelines.tracking import logged_model, schema
from pipelines.tracking.store import Store, TrackingError, tracking_uri

PREDICTIONS_ARTIFACT = "predictions"  # artifact folder of <run>.predictions.npz


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM (Prefect cancel, `kill`, CI timeouts) into SystemExit while the block
    runs, so the run is marked KILLED instead of dying RUNNING. Main thread only."""
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# Errors after which another process owns the run (matched by name: no Optuna import here).
HANDED_OVER = frozenset({"TrialTakenOver"})


def write_run_ref(run_dir: Path, store: Store, run_id: str) -> None:
    """`<run dir>/mlflow_run.json`: the run that evaluation (another process) continues. The
    store's URI is kept without its password: the run dir is a DVC output (cache, remote)."""
    ref = {"run_id": run_id, "tracking_uri": public_uri(store.uri)}
    write_json(ref, Path(run_dir) / schema.RUN_REF)


def run_id_of(run_dir: Path) -> str | None:
    """The MLflow run id recorded for a training run dir, if any."""
    return schema.read_run_ref(run_dir).get("run_id")


def _history_epochs(history: list[dict[str, float]], skip: set[int]) -> dict[int, dict]:
    return {
        int(h["epoch"]): schema.epoch_metrics(h) for h in history if int(h["epoch"]) not in skip
    }


class TrainingRun:
    """Engine callback that logs a training to one MLflow run (continued on resume)."""

    def __init__(
        self,
        store: Store,
        params: Params,
        run_dir: Path,
        data_dir: Path | None,
        *,
        entry_point: str,
        parent_run_id: str | None = None,
        run_name: str | None = None,
        config: str | None = None,
    ) -> None:
        self.store, self.params, self.run_dir = store, params, Path(run_dir)
        self.data_dir = Path(data_dir) if data_dir else None
        self.entry_point, self.parent_run_id, self.config = entry_point, parent_run_id, config
        self.run_name = run_name or schema.run_name(params, config)
        self.run_id: str | None = None
        self._ended = False
        self._warned = False

    def on_fit_start(self, state: TrainState) -> None:
        # The checkpoint's run, else the run dir's (a training killed before its first
        # checkpoint, or restarted from scratch because its params changed).
        previous = state.extra.get(schema.RUN_ID_KEY) or run_id_of(self.run_dir)
        if self.store.can_continue(previous, self.params):
            self.run_id = previous
            self.store.reopen(previous)
            logged = self.store.logged_epochs(previous)
        else:
            tags = {
                **schema.config_tags(self.params, self.entry_point, self.config),
                **schema.git_tags(),
                **schema.data_tags(self.data_dir),
            }
            if previous:
                tags[f"{schema.TAG}previous_run_id"] = previous
            self.run_id = self.store.start_run(
                self.params, tags, self.run_name, self.parent_run_id
            )
            if previous:  # a killed training's run must not stay RUNNING for ever
                self.store.supersede(previous, self.run_id)
            logged = set()
        # Epochs done before a resume that this run lacks (tracking was off, or params changed).
        self.store.log(self.run_id, epochs=_history_epochs(state.history, logged))
        state.extra[schema.RUN_ID_KEY] = self.run_id
        write_run_ref(self.run_dir, self.store, self.run_id)

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        try:
            self.store.log(self.run_id, epochs={state.epoch: schema.epoch_metrics(metrics)})
        except Exception as err:  # a tracking hiccup must not cost the training
            if not self._warned:
                warnings.warn(
                    redact(f"tracking: epoch {state.epoch} not logged: {err}"), stacklevel=2
                )
                self._warned = True

    def on_fit_end(self, state: TrainState, result: FitResult) -> None:
        best = {"best/epoch": float(state.best_epoch)}
        if state.history and "val/ensemble/acc" in state.history[-1]:  # else: no val split
            best["best/val/ensemble/acc"] = state.best_value
        self.store.log(self.run_id, epochs={state.epoch: best})

    def on_fit_error(self, state: TrainState, error: BaseException) -> None:
        self.fail(error)

    def finish(self, result: FitResult) -> None:
        """Attach the resolved params and history, then end the run FINISHED."""
        client = self.store.client
        client.log_dict(self.run_id, self.params.model_dump(mode="json"), "config/params.yaml")
        history = self.run_dir / "history.json"
        if history.is_file():
            client.log_artifact(self.run_id, str(history), "run")
        self.store.log(self.run_id, tags=schema.checkpoint_tags(self.run_dir, checkpoint.BEST))
        self.store.end(self.run_id)
        self._ended = True

    def fail(self, error: BaseException) -> None:
        """End the run KILLED/FAILED once (idempotent; never raises over `error`). A run
        handed over to another process (a search trial taken over) is left to it."""
        if type(error).__name__ in HANDED_OVER:
            self._ended = True
        if self.run_id and not self._ended:
            self._ended = True
            with contextlib.suppress(Exception):
                self.store.end(self.run_id, error)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Whatever escapes the block ends the run KILLED/FAILED; SIGTERM included."""
        try:
            with sigterm_as_exit():
                yield
        except BaseException as error:
            self.fail(error)
            raise


def _evaluation_run(
    store: Store, params: Params, model_dir: Path, data_dir: Path | None, **how: Any
) -> str:
    """Continue the training's run, or start one (with its history) if it cannot be."""
    previous = schema.read_run_ref(model_dir).get("run_id")
    if store.can_continue(previous, params):
        store.reopen(previous)
        return previous
    tags = {
        **schema.config_tags(params, how["entry_point"], how["config"]),
        **schema.git_tags(),
        **schema.data_tags(data_dir),
    }
    if previous:
        tags[f"{schema.TAG}previous_run_id"] = previous
    name = how["run_name"] or schema.run_name(params, how["config"])
    run_id = store.start_run(params, tags, name, how["parent_run_id"])
    path = Path(model_dir) / "history.json"
    history = json.loads(path.read_text()) if path.is_file() else []
    store.log(run_id, epochs=_history_epochs(history, set()))
    return run_id


def log_evaluation(
    store: Store,
    params: Params,
    data_dir: Path | None,
    model_dir: Path,
    out_path: Path,
    metrics: dict,
    *,
    entry_point: str,
    parent_run_id: str | None = None,
    run_name: str | None = None,
    log_model: bool = True,
    config: str | None = None,
) -> str:
    """Log test metrics, metrics JSON, plots and the model to the training's run; end it."""
    model_dir, out_path = Path(model_dir), Path(out_path)
    run_id = _evaluation_run(
        store,
        params,
        model_dir,
        data_dir,
        entry_point=entry_point,
        run_name=run_name,
        parent_run_id=parent_run_id,
        config=config,
    )
    try:
        tags = {f"{schema.TAG}eval_entry_point": entry_point}
        tags |= schema.checkpoint_tags(model_dir, checkpoint.BEST)
        step = int(metrics.get("selection", {}).get("best_epoch", 0))
        store.log(run_id, epochs={step: schema.final_metrics(metrics)}, tags=tags)
        store.client.log_dict(run_id, params.model_dump(mode="json"), "config/params.yaml")
        store.client.log_artifact(run_id, str(out_path), "metrics")
        preds = predictions_path(out_path)
        if preds.is_file():  # per-example predictions: `pipelines compare` tests pairs on them
            store.client.log_artifact(run_id, str(preds), PREDICTIONS_ARTIFACT)
        for plot in sorted(out_path.parent.glob("*.png")) + sorted(out_path.parent.glob("*.svg")):
            store.client.log_artifact(run_id, str(plot), "plots")
        if "curve" in metrics:
            store.log(run_id, tags={f"{schema.TAG}curve_labels": schema.curve_labels(metrics)})
        if log_model:
            logged_model.log_model(store, run_id, params, model_dir, data_dir)
        if log_model and (budget := (metrics.get("cascade") or {}).get("budget")):
            logged_model.log_model(store, run_id, params, model_dir, data_dir, budget["tau"])
    except BaseException as error:
        with contextlib.suppress(Exception):
            store.end(run_id, error)
        raise
    store.end(run_id)
    return run_id


def attach_files(run_dir: Path, files: list[Path], artifact_path: str = "plots") -> str | None:
    """Add files (e.g. plots made by a later stage) to the run recorded in `run_dir`."""
    run_id = run_id_of(run_dir)
    if run_id is None:
        return None
    store = Store.connect()
    for path in files:
        store.client.log_artifact(run_id, str(path), artifact_path)
    return run_id


__all__ = [
    "Store",
    "TrackingError",
    "TrainingRun",
    "attach_files",
    "log_evaluation",
    "run_id_of",
    "sigterm_as_exit",
    "tracking_uri",
]
