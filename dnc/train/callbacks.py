"""The engine's callback protocol and the state it hands to callbacks.

`dnc.train.engine.fit` emits events (`on_fit_start`, `on_epoch_end`, ...) to the callbacks
it is given; MLflow, Optuna pruning and progress reporting subscribe as callbacks.
`TrainState` is what a resumed run continues from: it is saved in every checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass
class TrainState:
    """Everything the loop needs to continue; saved in every checkpoint."""

    epoch: int = -1  # last completed epoch (0-based)
    global_step: int = 0
    best_value: float = -math.inf
    best_epoch: int = -1
    history: list[dict[str, float]] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)  # callbacks' own ids (e.g. run ids)


@dataclass
class FitResult:
    state: TrainState
    run_dir: Path
    best_path: Path
    resumed_from: int  # epoch the run resumed after, -1 for a fresh run


class Callback(Protocol):
    """Engine events; implement any subset (see `CallbackList`)."""

    def on_fit_start(self, state: TrainState) -> None: ...
    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None: ...
    # Before an epoch's checkpoints are written: a callback may raise to keep them unwritten
    # (e.g. a search worker whose trial another worker took over while it was paused).
    def on_before_checkpoint(self, state: TrainState) -> None: ...
    def on_fit_end(self, state: TrainState, result: FitResult) -> None: ...
    def on_fit_error(self, state: TrainState, error: BaseException) -> None: ...


class CallbackList:
    """Dispatch an event to every callback that defines it."""

    def __init__(self, callbacks: Sequence[object]) -> None:
        self.callbacks = list(callbacks)

    def __call__(self, event: str, *args: Any) -> None:
        for cb in self.callbacks:
            handler = getattr(cb, event, None)
            if handler is not None:
                handler(*args)
