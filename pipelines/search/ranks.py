"""Optuna trials trained by torchrun's ranks together: rank 0 samples, every rank trains it.

`torchrun --nproc-per-node N -m pipelines search --study S ...`: rank 0 alone is an Optuna
worker (storage, sampler, pruner, reports, MLflow). Before each trial's training it broadcasts
the trial's full params (and run dir) to the other ranks, which wait in `follow` and join the
same data- or member-parallel training (`dnc.train.distributed`). This is the idea of
optuna-integration's TorchDistributedTrial (not installed here) with one broadcast per trial
instead of one per suggested value. A pruning decision is taken on rank 0 and broadcast after
every epoch (`EpochSync`), so all ranks stop the trial at the same epoch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import optuna
import torch
import torch.distributed as dist

from dnc import stages
from dnc.config import Params
from dnc.train.callbacks import TrainState
from dnc.train.distributed import device_type, join_world, world_from_env
from dnc.train.engine import DivergenceError

CPU = torch.device("cpu")  # objects travel over the gloo (CPU) half of the group


def distributed() -> bool:
    """Launched by torchrun with more than one rank."""
    world = world_from_env()
    return world is not None and world.size > 1


def is_follower() -> bool:
    """A torchrun rank other than 0."""
    world = world_from_env()
    return world is not None and world.size > 1 and world.rank != 0


def join(base: Params) -> None:
    """Join the process group before the first trial (the training then reuses it)."""
    world = world_from_env()
    if world is not None and world.size > 1:
        join_world(world, device_type(base.train.device) == "cuda")


class FollowerStop(Exception):
    """Rank 0 pruned the trial: stop this rank's copy of it."""


class EpochSync:
    """Engine callback on every rank: rank 0's pruning decision, broadcast after each epoch."""

    every_rank = True  # kept by the engine on every rank (it takes part in a collective)

    def __init__(self, monitor: Any = None) -> None:
        self.monitor = monitor  # rank 0: the trial's TrialMonitor; other ranks: None

    def on_fit_start(self, state: TrainState) -> None:
        if self.monitor is not None:
            self.monitor.on_fit_start(state)

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        pruned: optuna.TrialPruned | None = None
        if self.monitor is not None:
            try:
                self.monitor.on_epoch_end(state, metrics)
            except optuna.TrialPruned as err:
                pruned = err
        decision = [None if pruned is None else str(pruned)]
        dist.broadcast_object_list(decision, src=0, device=CPU)
        if pruned is not None:
            raise pruned
        if decision[0] is not None:
            raise FollowerStop(decision[0])


def lead(
    monitor: Any, params: Params, data_dir: Path, run_dir: Path, resume: bool, number: int
) -> list[Any]:
    """Rank 0, before a trial trains: send the trial to the other ranks; the callbacks to train
    with. Outside torchrun: just the monitor."""
    if not distributed():
        return [monitor]
    job = {"params": params, "data_dir": data_dir, "run_dir": run_dir, "resume": resume}
    dist.broadcast_object_list([{**job, "number": number}], src=0, device=CPU)
    return [EpochSync(monitor)]


def release() -> None:
    """Rank 0, when its worker stops: let the other ranks return."""
    if distributed() and dist.is_initialized():
        dist.broadcast_object_list([None], src=0, device=CPU)


def digest(params: Params) -> str:
    """What a rank trained, comparable with the trial's params.json."""
    text = json.dumps(params.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def follow(study: str) -> dict[str, Any]:
    """Ranks > 0: train each trial rank 0 sends until it sends None; what was trained."""
    followed: list[dict[str, Any]] = []
    while True:
        message: list[Any] = [None]
        dist.broadcast_object_list(message, src=0, device=CPU)
        job = message[0]
        if job is None:
            break
        params: Params = job["params"]
        outcome = "complete"
        try:
            stages.train(
                params, job["data_dir"], job["run_dir"], [EpochSync()], resume=job["resume"]
            )
        except FollowerStop:
            outcome = "pruned"
        except DivergenceError:  # raised on every rank at the same step (check_finite)
            outcome = "diverged"
        followed.append({"number": job["number"], "outcome": outcome, "params": digest(params)})
    return {
        "study": study,
        "stop_reason": "rank 0 stopped",
        "counts": {"followed": len(followed)},
        "best": [],
        "files": {},
        "followed": followed,
    }
