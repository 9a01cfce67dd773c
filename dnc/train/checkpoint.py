"""Atomic, weights-only checkpoints: a killed run never leaves a half-written file.

`last.pt` also records the resolved params of the run (dotted keys) and their fingerprint,
so a resume with other params fails before any compute (`check_resume`), naming the key.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from pathlib import Path
from typing import Any

import torch

from dnc.config import ConfigError, resume_safe
from dnc.io import atomic_path, clean_stale_temps

LAST = "last.pt"  # resumable training state, rewritten every epoch
BEST = "best.pt"  # the selected inference model (best validation epoch)
DIGEST = "tensor_sha256"  # key of the stored tensor digest (removed again by `load`)
# Files a run folder holds; their temp files are litter once their writer is dead.
RUN_FILES = (LAST, BEST, "history.json", "params.json")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or does not fit the model of the params."""


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """torch.save to a temp file in the same folder, then rename over `path`.

    Serialised in memory first: torch's zip writer reports a full disk as an opaque
    `inline_container.cc` RuntimeError, a plain file write as ENOSPC naming `path`.
    """
    buffer = io.BytesIO()
    torch.save({**obj, DIGEST: tensor_digest(obj)}, buffer)

    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def load(path: Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`; a missing file names itself."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({first})") from err
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a dnc checkpoint (a {type(ckpt).__name__})")
    stored = ckpt.pop(DIGEST, None)
    if stored is not None and stored != tensor_digest(ckpt):
        raise CheckpointError(f"{path}: tensors do not match their sha256 (the file is damaged)")
    return ckpt


def tensor_digest(obj: Any) -> str:
    """sha256 over every tensor in `obj` (nested dicts/lists: key path, dtype, shape, bytes).

    torch's zip reader does not check its CRCs, so a flipped bit in a weight loads silently;
    this digest, stored in the file, catches it."""
    digest = hashlib.sha256()

    def walk(node: Any, where: str) -> None:
        if isinstance(node, torch.Tensor):
            t = node.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{where}|{node.dtype}|{tuple(node.shape)}".encode())
            digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(node, dict):
            for key in sorted(node, key=str):
                walk(node[key], f"{where}/{key}")
        elif isinstance(node, (list, tuple)):
            for i, item in enumerate(node):
                walk(item, f"{where}/{i}")

    walk(obj, "")
    return digest.hexdigest()


def fingerprint(flat: dict[str, Any]) -> str:
    """sha256 of the dotted params that must not change across a resume."""
    kept = {k: v for k, v in sorted(flat.items()) if not resume_safe(k)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def first_difference(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """The first dotted key (sorted) that differs and is not resume-safe, or None."""
    for key in sorted(set(old) | set(new)):
        if not resume_safe(key) and old.get(key, "<absent>") != new.get(key, "<absent>"):
            return key
    return None


def check_resume(path: Path, flat: dict[str, Any]) -> None:
    """`path` (a last.pt) was written by a run of these params, up to the resume-safe keys
    (dnc.config.RESUME_SAFE_KEYS); else one ConfigError naming the first differing key."""
    verify_params(load(path), path, flat)


def verify_params(ckpt: dict[str, Any], path: Path, flat: dict[str, Any]) -> None:
    """`check_resume` on an already loaded last.pt."""
    old = ckpt.get("params")
    if not isinstance(old, dict):
        raise ConfigError(
            f"{path}: holds no params fingerprint (written by an older dnc); "
            "pass --restart to start over"
        )
    if ckpt.get("fingerprint") == fingerprint(flat):
        return
    key = first_difference(old, flat) or "params"
    raise ConfigError(
        f"{key}: {path} was trained with {old.get(key)!r}, the params say {flat.get(key)!r}; "
        "restore it, or pass --restart to start over"
    )


def clean_run_dir(run_dir: Path) -> list[Path]:
    """Remove temp files of killed writers (`.best.pt.*`, `.last.pt.*`, ...) in `run_dir`."""
    return clean_stale_temps(Path(run_dir), RUN_FILES)
