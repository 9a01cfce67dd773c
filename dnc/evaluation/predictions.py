"""Per-example test predictions of one evaluated run: the input of the paired tests.

Written beside the metrics JSON as `<run>.predictions.npz` (`reports/evaluate/base/seed0.json`
-> `reports/evaluate/base/seed0.predictions.npz`): the predicted class of the ensemble, of
each member and of each k-of-S prefix, and the labels, as small integer arrays (uint8 for up
to 256 classes, int16 beyond), so a McNemar test between two runs needs no model and no data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from dnc.config import ConfigError
from dnc.io import atomic_path

SUFFIX = ".predictions.npz"
KEYS = ("labels", "ensemble", "members", "prefixes")


class PredictionsError(ConfigError):
    """A predictions file is missing, unreadable or inconsistent (the message names it)."""


@dataclass(frozen=True)
class Predictions:
    """labels (N,), ensemble (N,), members (S, N), prefixes (S, N): row k-1 = first k members."""

    labels: np.ndarray
    ensemble: np.ndarray
    members: np.ndarray
    prefixes: np.ndarray

    def correct(self, which: str = "ensemble") -> np.ndarray:
        """Per-example correctness (N,) bool of `ensemble`, `member_<i>` or `k_<k>`."""
        if which == "ensemble":
            pred = self.ensemble
        elif which.startswith("member_"):
            pred = self.members[int(which.split("_")[1])]
        elif which.startswith("k_"):
            pred = self.prefixes[int(which.split("_")[1]) - 1]
        else:
            raise ValueError(f"unknown prediction {which!r}")
        return pred == self.labels


def predictions_path(metrics_path: Path) -> Path:
    """Where the predictions of the metrics JSON `metrics_path` live."""
    path = Path(metrics_path)
    return path.with_name(path.name.removesuffix(".json") + SUFFIX)


def _dtype(num_classes: int) -> type:
    return np.uint8 if num_classes <= 256 else np.int16


def write_predictions(
    path: Path,
    labels: ArrayLike,
    ensemble: ArrayLike,
    members: ArrayLike,
    prefixes: ArrayLike,
    num_classes: int,
) -> Path:
    """Write the four arrays to `path` (.npz, compressed) atomically; returns `path`."""
    dtype = _dtype(num_classes)
    values = (labels, ensemble, members, prefixes)
    arrays = {k: np.asarray(v).astype(dtype) for k, v in zip(KEYS, values, strict=True)}
    n = arrays["labels"].shape[0]
    if arrays["ensemble"].shape != (n,) or arrays["members"].shape[1:] != (n,):
        raise PredictionsError(f"{path}: shapes do not match {n} labels")
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return Path(path)


def read_predictions(path: Path) -> Predictions:
    """The predictions in `path`; a missing or malformed file names itself."""
    path = Path(path)
    if not path.is_file():
        raise PredictionsError(f"{path}: predictions not found (evaluate the run first)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in KEYS}
    except (OSError, KeyError, ValueError) as err:
        raise PredictionsError(f"{path}: not a predictions file ({err})") from None
    return Predictions(**arrays)
