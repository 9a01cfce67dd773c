"""Atomic, weights-only checkpoints: a killed run never leaves a half-written file."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from dnc.io import atomic_path


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or does not fit the model of the params."""


LAST = "last.pt"  # resumable training state, rewritten every epoch
BEST = "best.pt"  # the selected inference model (best validation epoch)


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """torch.save to a temp file in the same folder, then rename over `path`."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load(path: Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`; a missing file names itself."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({first})") from err
