"""A durable Optuna study shared by any number of worker processes.

Exact trial accounting: the study's N trials are created up front as WAITING trials (one
"slot" each), and a worker only ever takes a WAITING trial, never creates one. Taking a slot
(`ask`) and topping the slots up happen under a study-wide lock (a file lock for SQLite, a
PostgreSQL advisory lock), so two workers can neither run the same slot nor make a surplus
one; Optuna's `MaxTrialsCallback` counts after the fact and overshoots by up to one trial
per worker. A worker killed mid-trial stops its heartbeat; the next worker to look fails
the stale trial and Optuna's `RetryHeartbeatStaleTrialCallback` re-queues it with the same
parameters, which then resumes from the trial's checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from dnc.config import ConfigError, Params
from dnc.io import derive_seed
from pipelines.search.space import SearchConfig, grid
from pipelines.search.storage import StudyLock, open_storage, quiet_experimental

FINAL = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def stable_seed(*parts: int | str) -> int:
    """`dnc.io.derive_seed` of `parts`, cut to 31 bits: Optuna's samplers seed numpy's
    RandomState, which takes seeds below 2**32."""
    return derive_seed(*parts) >> 32


def make_sampler(search: SearchConfig, seed: int) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded. Grid slots carry their parameters (see `reserve`)."""
    if search.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=search.startup_trials)
    if search.sampler == "nsga2":
        population = max(2, search.startup_trials)
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
    return optuna.samplers.RandomSampler(seed=seed)


def max_epochs(base: Params, search: SearchConfig) -> int:
    """The most epochs a trial can train (Hyperband's maximum resource)."""
    dim = search.space.get("train.epochs")
    if dim is None:
        return base.train.epochs
    return int(max(dim.choices) if dim.choices is not None else dim.high)


def make_pruner(base: Params, search: SearchConfig) -> optuna.pruners.BasePruner:
    """Epoch-level pruning on validation accuracy (single objective only)."""
    if search.mode == "multi" or search.pruner == "none":
        return optuna.pruners.NopPruner()
    if search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=search.startup_trials)
    top = max_epochs(base, search)
    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=top, reduction_factor=3)


def directions(search: SearchConfig) -> list[str]:
    """single: max accuracy; multi: max accuracy, min inference MACs."""
    return ["maximize"] if search.mode == "single" else ["maximize", "minimize"]


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of stale trials that were queued again (their retry stands for them)."""
    with quiet_experimental():
        return {n for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}


def is_retry(trial: FrozenTrial) -> bool:
    with quiet_experimental():
        return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial) is not None


def final_trials(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """One finished trial per slot: retried stale trials are left out."""
    retried = retried_numbers(trials)
    return [t for t in trials if t.state in FINAL and t.number not in retried]


def fingerprint(base: Params, search: SearchConfig) -> dict[str, Any]:
    """What must not change within a study: the fixed params (all but the searched keys
    and the per-trial seed), the mode and the space."""
    fixed = {k: v for k, v in base.flat().items() if k not in search.space}
    space = {k: d.model_dump(exclude_none=True) for k, d in search.space.items()}
    return {"params": fixed, "mode": search.mode, "space": space}


FINGERPRINT = "dnc.fingerprint"  # user attr: a short hash, shown by `optuna studies`
FINGERPRINT_TEXT = "dnc.fingerprint_text"  # system attr: the full text, to name a change
METRIC_NAMES = {"single": ["val_acc"], "multi": ["val_acc", "inference_macs"]}


def fingerprint_hash(fingerprint: dict[str, Any]) -> str:
    """A short, stable hash of a fingerprint (canonical JSON)."""
    text = json.dumps(fingerprint, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_fingerprint(study: optuna.Study, storage: RDBStorage, mine: dict[str, Any]) -> None:
    # The full fingerprint (~2 kB) is a system attr, so that user attrs stay one short row
    # in `optuna studies` and the dashboard; the hash there still says which study is which.
    mine = json.loads(json.dumps(mine))
    study_id = storage.get_study_id_from_name(study.study_name)
    theirs = storage.get_study_system_attrs(study_id).get(FINGERPRINT_TEXT)
    if theirs is None:
        storage.set_study_system_attr(study_id, FINGERPRINT_TEXT, mine)
        study.set_user_attr(FINGERPRINT, fingerprint_hash(mine))
        return
    for section in ("mode", "space", "params"):
        a, b = theirs.get(section), mine[section]
        if a == b:
            continue
        if section == "params":
            key = next(k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
            raise ConfigError(
                f"{key}: study {study.study_name!r} was created with {a.get(key)!r}, "
                f"not {b.get(key)!r} (use another --study name)"
            )
        raise ConfigError(
            f"search.{section}: differs from study {study.study_name!r}'s (use another --study)"
        )


def reserve(
    study: optuna.Study, search: SearchConfig, seeds: Sequence[dict[str, Any]] = ()
) -> int:
    """Top the study up to `n_trials` slots (call under the lock); returns slots added.
    Grid slots carry their grid point; `seeds` (the planner's proposals) fill the first
    slots; the others are sampled when a worker takes them."""
    fresh = [t for t in study.get_trials(deepcopy=False) if not is_retry(t)]
    points: list[dict[str, Any]] = [*seeds, *[{}] * search.n_trials][: search.n_trials]
    if search.sampler == "grid":
        points = grid(search)[: search.n_trials]
    for point in points[len(fresh) :]:
        study.enqueue_trial(point)
    return max(0, len(points) - len(fresh))


@dataclass
class Study:
    """An opened study and what its workers share."""

    name: str
    storage: RDBStorage
    lock: StudyLock
    base: Params
    search: SearchConfig

    def load(self, seed: int = 0) -> optuna.Study:
        """The study with a sampler seeded for the next trial taken."""
        return optuna.load_study(
            study_name=self.name,
            storage=self.storage,
            sampler=make_sampler(self.search, seed),
            pruner=make_pruner(self.base, self.search),
        )


def open_study(
    name: str,
    base: Params,
    search: SearchConfig,
    setup: Callable[[optuna.Study], None],
    seeds: Sequence[dict[str, Any]] = (),
) -> Study:
    """Create or load the study, check it is the same study, top up its slots and run
    `setup` (e.g. the MLflow parent run), all under the study lock."""
    lock = StudyLock(search.storage, name)
    with lock:  # also serialises creating the schema of a new database
        storage = open_storage(search)
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            directions=directions(search),
            load_if_exists=True,
        )
        if [d.name.lower() for d in study.directions] != directions(search):
            raise ConfigError(f"search.mode: study {name!r} has other objectives")
        _check_fingerprint(study, storage, fingerprint(base, search))
        with quiet_experimental():  # the dashboard's axis labels instead of "0", "1"
            study.set_metric_names(METRIC_NAMES[search.mode])
        reserve(study, search, seeds)
        setup(study)
    return Study(name, storage, lock, base, search)


def run_worker(
    study: Study,
    objective: Callable[[optuna.Trial], Any],
    budget_left: Callable[[list[FrozenTrial]], str | None],
) -> str:
    """Run slots until none is left; returns why this worker stopped. With no free slot
    but trials still running, waits up to a grace period so that a trial of a killed worker
    goes stale and is retried here."""
    interval = study.search.heartbeat_interval
    waiting_since: float | None = None

    def take_slot(trial: optuna.Trial) -> Any:
        study.lock.release()  # the slot is ours: let other workers take theirs
        return objective(trial)

    while True:
        study.lock.acquire()
        try:
            current = study.load()
            with quiet_experimental():
                optuna.storages.fail_stale_trials(current)
            trials = current.get_trials(deepcopy=False)
            if reason := budget_left(trials):
                return reason
            waiting = [t for t in trials if t.state == TrialState.WAITING]
            if waiting:
                # Seeded per slot so a re-run of the study samples the same parameters.
                seeded = study.load(stable_seed(study.name, "sampler", waiting[0].number))
                seeded.optimize(take_slot, n_trials=1)
                waiting_since = None
                continue
            if not any(t.state == TrialState.RUNNING for t in trials):
                return "all trials finished"
            waiting_since = waiting_since or time.monotonic()
            if time.monotonic() - waiting_since > study.search.grace_period + interval:
                return "no free trial; the running ones belong to live workers"
        finally:
            study.lock.release()
        time.sleep(interval)


def tally(trials: list[FrozenTrial]) -> dict[str, int]:
    """Trial counts by outcome, one per slot (see `final_trials`)."""
    final = final_trials(trials)
    count = {
        "complete": sum(t.state == TrialState.COMPLETE for t in final),
        "rejected": sum("rejected" in t.user_attrs for t in final),
        "diverged": sum("diverged" in t.user_attrs for t in final),
        "invalid": sum("invalid" in t.user_attrs for t in final),
        "failed": sum(t.state == TrialState.FAIL for t in final),
        "waiting": sum(t.state == TrialState.WAITING for t in trials),
        "running": sum(t.state == TrialState.RUNNING for t in trials),
        "retried": len(retried_numbers(trials)),
    }
    stopped = count["rejected"] + count["diverged"] + count["invalid"]
    count["pruned"] = sum(t.state == TrialState.PRUNED for t in final) - stopped
    count["finished"] = len(final)
    return count
