"""Training progress that fits where it goes: a tqdm bar on a terminal, one plain line per
epoch otherwise (a `dvc repro` or CI log gets no carriage-return frames)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

SHOWN = ("train/loss", "val/ensemble/acc", "train/lr", "train/images_per_s")


def is_terminal(stream: IO[str] | None = None) -> bool:
    """True when `stream` (default stderr) is an interactive terminal."""
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def batch_bar(batches: Iterable[T], total: int, desc: str, enabled: bool) -> Iterator[T]:
    """`batches` behind a transient tqdm bar when enabled and on a terminal, else as is."""
    if not (enabled and is_terminal()):
        return iter(batches)
    return iter(tqdm(batches, total=total, desc=desc, leave=False, dynamic_ncols=True))


def epoch_line(metrics: dict[str, float], epochs: int) -> str:
    """`epoch 2/3  train/loss 0.512  val/ensemble/acc 91.20  ...` (the keys that exist)."""
    parts = [f"epoch {int(metrics['epoch']) + 1}/{epochs}"]
    parts += [f"{k} {metrics[k]:.4g}" for k in SHOWN if k in metrics]
    return "  ".join(parts)


class EpochLines:
    """Engine callback: one line per finished epoch on `stream` (default stderr)."""

    def __init__(self, epochs: int, stream: IO[str] | None = None) -> None:
        self.epochs = epochs
        self.stream = stream

    def on_epoch_end(self, state: Any, metrics: dict[str, float]) -> None:
        """Print the epoch's line."""
        print(epoch_line(metrics, self.epochs), file=self.stream or sys.stderr, flush=True)


def progress_callbacks(enabled: bool, epochs: int) -> list[EpochLines]:
    """The per-epoch line callback where no bar can draw (progress on, not a terminal)."""
    return [EpochLines(epochs)] if enabled and not is_terminal() else []
