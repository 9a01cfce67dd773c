"""The Optuna objective: one trial = one ordinary tracked training run.

A trial samples the searched keys, counts the configuration's cost on the meta device and
rejects it before any training if it exceeds the inference budget. Otherwise it calls the
same `runner.train` as every other entry point, with an engine callback that reports the
validation accuracy each epoch (pruning) and accounts the training compute.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from dnc.config import ConfigError, Params
from dnc.train.callbacks import TrainState
from dnc.train.engine import DivergenceError
from pipelines.search import ranks
from pipelines.search.space import SearchConfig, inference_cost, over_budget
from pipelines.search.study import TrialTakenOver, stable_seed
from pipelines.tracking import runner
from pipelines.tracking.schema import read_run_ref

# Forward + backward of one training image cost about 3x its forward pass.
TRAIN_PASS_FACTOR = 3


def suggest(trial: optuna.Trial, search: SearchConfig) -> dict[str, Any]:
    """Draw every searched key; Optuna parameter names are the dotted params keys."""
    out: dict[str, Any] = {}
    for key, dim in search.space.items():
        if dim.choices is not None:
            out[key] = trial.suggest_categorical(key, dim.choices)
        elif dim.is_int:
            step = int(dim.step or 1)
            out[key] = trial.suggest_int(key, int(dim.low), int(dim.high), step=step, log=dim.log)
        else:
            out[key] = trial.suggest_float(key, dim.low, dim.high, step=dim.step, log=dim.log)
    return out


class TrialMonitor:
    """Engine callback: per-epoch report + pruning (single objective) and compute used."""

    def __init__(
        self, trial: optuna.Trial, report: bool, macs: int, n_val: int, epochs: int
    ) -> None:
        self.trial, self.report, self.macs, self.n_val = trial, report, macs, n_val
        self.epochs = epochs
        self.train_macs = 0.0
        self.seconds = 0.0
        self._start = time.perf_counter()

    def on_fit_start(self, state: TrainState) -> None:
        self._start = time.perf_counter()

    def on_before_checkpoint(self, state: TrainState) -> None:
        """Stop before writing if the trial is no longer ours (see `TrialTakenOver`)."""
        current = self.trial.storage.get_trial(self.trial._trial_id).state
        if current != TrialState.RUNNING:
            raise TrialTakenOver(f"trial {self.trial.number} is {current.name} (taken over)")

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        seen = metrics["train/images_per_s"] * metrics["train/epoch_time_s"]
        self.train_macs += (TRAIN_PASS_FACTOR * round(seen) + self.n_val) * self.macs
        self.seconds = time.perf_counter() - self._start
        self.trial.set_user_attr("train_macs", self.train_macs)
        self.trial.set_user_attr("train_seconds", round(self.seconds, 3))
        if not self.report:
            return
        acc, done = metrics["val/ensemble/acc"], state.epoch + 1
        self.trial.report(acc, step=done)  # step = epochs trained (the pruner's resource)
        # Pruning after the last epoch would save nothing and throw the result away.
        if done < self.epochs and self.trial.should_prune():
            raise optuna.TrialPruned(f"after {done} epochs: val acc {acc:.2f} % below the cut")


def _stop(trial: optuna.Trial, kind: str, reason: str) -> optuna.TrialPruned:
    """Record why a trial stopped (user attr `kind`) and end it pruned."""
    trial.set_user_attr(kind, reason)
    return optuna.TrialPruned(f"{kind}: {reason}")


def _resumable(run_dir: Path, params: Params) -> bool:
    """Resume a retried trial only from a checkpoint of these exact params; a stale run
    dir of other params (a deleted and re-created study) is removed."""
    if runner.resumable(run_dir, params):
        return True
    if run_dir.is_dir():
        shutil.rmtree(run_dir)
    return False


@dataclass
class Objective:
    """`objective(trial)` for a study; returns val accuracy (and MACs in multi mode)."""

    study_name: str
    base: Params
    search: SearchConfig
    data_dir: Path
    models_dir: Path
    n_val: int
    parent_run_id: str | None = None

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        # A retried trial inherits its user attrs: keep the first trial's number and seed.
        number = int(trial.user_attrs.get("trial", trial.number))
        first_try = "trial" not in trial.user_attrs
        seed = stable_seed(self.study_name, number)
        trial.set_user_attr("trial", number)
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("train_macs", 0.0)  # this attempt's own compute (a retry copies)
        trial.set_user_attr("train_seconds", 0.0)
        values = suggest(trial, self.search)
        try:
            params = self.base.with_overrides({**values, "seed": seed})
        except ConfigError as err:
            raise _stop(trial, "invalid", str(err)) from None
        macs, n_params = inference_cost(params)
        trial.set_user_attr("macs", macs)
        trial.set_user_attr("params", n_params)
        if first_try:
            self._constrain(trial, macs, n_params)
        if reason := over_budget(macs, n_params, self.search.budget):
            raise _stop(trial, "rejected", reason)  # before any run dir or training
        return self._train(trial, params, number, macs)

    def _constrain(self, trial: optuna.Trial, macs: int, n_params: int) -> None:
        # Samplers learn the feasible region from these (<= 0 is feasible).
        budget = self.search.budget
        if budget.macs is not None:
            trial.set_constraint("macs", macs / budget.macs - 1)
        if budget.params is not None:
            trial.set_constraint("params", n_params / budget.params - 1)

    def _train(
        self, trial: optuna.Trial, params: Params, number: int, macs: int
    ) -> float | tuple[float, float]:
        run_dir = self.models_dir / self.study_name / f"trial_{number}"
        resume = _resumable(run_dir, params)
        trial.set_user_attr("run_dir", str(run_dir))
        single = self.search.mode == "single"
        monitor = TrialMonitor(trial, single, macs, self.n_val, params.train.epochs)
        # Under torchrun: the other ranks get this trial's params and train it too.
        callbacks = ranks.lead(monitor, params, self.data_dir, run_dir, resume, number)
        try:
            result = runner.train(
                params,
                self.data_dir,
                run_dir,
                entry_point="optuna",
                callbacks=callbacks,
                resume=resume,
                parent_run_id=self.parent_run_id,
                run_name=f"{self.study_name}/trial_{number}",
            )
        except DivergenceError as err:
            self._record_run(trial, run_dir)
            raise _stop(trial, "diverged", str(err)) from None
        except TrialTakenOver:
            raise  # the trial, its run dir and its MLflow run belong to another worker now
        except BaseException:
            self._record_run(trial, run_dir)
            raise
        self._record_run(trial, run_dir)
        trial.set_user_attr("best_epoch", result.state.best_epoch)
        trial.set_user_attr("resumed_from_epoch", result.resumed_from)
        acc = float(result.state.best_value)
        return acc if self.search.mode == "single" else (acc, float(macs))

    @staticmethod
    def _record_run(trial: optuna.Trial, run_dir: Path) -> None:
        if run_id := read_run_ref(run_dir).get("run_id"):
            trial.set_user_attr("mlflow_run_id", run_id)
