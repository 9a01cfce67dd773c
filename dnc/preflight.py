"""Checks that must fail before any compute: the device exists, the output can be written,
a resumed run has the same params, an evaluated run finished its epochs.

Each raises a project error naming the key, variable or file (dnc.cli prints it as one line).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from dnc.config import ConfigError, Params
from dnc.train import checkpoint


def check_device(spec: str, key: str = "train.device") -> None:
    """`spec` (auto, cpu, cuda, cuda:N, mps) names a device this machine has."""
    if spec in ("auto", "cpu"):
        return
    if spec == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"{key}: mps requested but MPS is not available here")
        return
    if not spec.startswith("cuda"):
        raise ConfigError(f"{key}: {spec!r} is not a device (auto, cpu, cuda, cuda:N, mps)")
    if not torch.cuda.is_available():
        raise ConfigError(f"{key}: {spec} requested but CUDA is not available here")
    index = int(spec.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(f"{key}: {spec} but this machine has {torch.cuda.device_count()} GPU(s)")


def check_writable(path: Path, folder: bool = True, flag: str = "--out") -> None:
    """`path` (a folder, or a file with `folder=False`) can be written: it is of that kind
    if it exists, and the folder it is written in is writable. Creates nothing."""
    if not str(path):
        raise ConfigError(f"{flag}: empty path")
    path = Path(path).absolute()
    if path.exists() and path.is_dir() != folder:
        raise ConfigError(f"{flag} {path}: exists and is not a {'folder' if folder else 'file'}")
    node = path if folder and path.exists() else path.parent
    while not node.exists():
        node = node.parent
    if not node.is_dir():
        raise ConfigError(f"{flag} {path}: {node} is a file, not a folder")
    if not os.access(node, os.W_OK):
        raise ConfigError(f"{flag} {path}: {node} is not writable")


def prepare_run_dir(params: Params, out_dir: Path, resume: bool) -> None:
    """Before training into `out_dir`: it can be written; a last.pt there was written by
    these params (else --restart); litter of killed writers goes."""
    check_writable(out_dir)
    last = Path(out_dir) / checkpoint.LAST
    if resume and last.is_file():
        checkpoint.check_resume(last, params.flat())


def start_run_dir(out_dir: Path, resume: bool) -> None:
    """Create `out_dir`, remove stale temp files; `resume=False` (--restart) removes the
    previous run's checkpoints and history so nothing of it survives."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint.clean_run_dir(out_dir)
    if not resume:
        for name in checkpoint.RUN_FILES:
            (out_dir / name).unlink(missing_ok=True)


def training_progress(params: Params, model_dir: Path) -> dict[str, Any]:
    """{epochs, epochs_done, complete} of the run in `model_dir`, from last.pt (or the
    history.json a finished run writes)."""
    model_dir = Path(model_dir)
    last, history = model_dir / checkpoint.LAST, model_dir / "history.json"
    if last.is_file():
        done = int(checkpoint.load(last)["state"]["epoch"]) + 1
    elif history.is_file():
        done = len(json.loads(history.read_text()))
    else:
        done = 0  # best.pt alone: nothing says the run finished
    epochs = params.train.epochs
    return {"epochs": epochs, "epochs_done": done, "complete": done >= epochs}


def check_complete(progress: dict[str, Any], model_dir: Path, allow_incomplete: bool) -> None:
    """Refuse to evaluate a run that did not finish its epochs, unless allowed."""
    if not progress["complete"] and not allow_incomplete:
        raise ConfigError(
            f"train.epochs: {model_dir} finished {progress['epochs_done']} of "
            f"{progress['epochs']} epochs; resume training, or pass --allow-incomplete"
        )
