"""One helper per job for files and seeds: atomic writes, JSON, hashing, seed derivation.

Every stage, flow and report writes through these, so no process killed mid-write leaves
half a file, and every derived seed is the same pure function everywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success rename it over `path`, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(text: str, path: Path) -> Path:
    """Write `text` to `path` atomically; returns `path`."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(obj: Any, path: Path) -> Path:
    """Write `obj` as indented JSON to `path` atomically; returns `path`."""
    return write_text(json.dumps(obj, indent=2) + "\n", path)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed that is a pure function of `parts`, e.g. (seed, epoch, "shuffle")."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1
