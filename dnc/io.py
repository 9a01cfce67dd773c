"""One helper per job for files and seeds: atomic writes, JSON (to files and stdout), hashing,
seed derivation.

Every stage, flow and report writes through these, so no process killed mid-write leaves
half a file, and every derived seed is the same pure function everywhere.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def temp_prefix(name: str) -> str:
    """Prefix of the temp files written beside `name`: `.<name>.<pid>-`; the pid lets
    `clean_stale_temps` tell a killed writer's litter from a live writer's file."""
    return f".{name}.{os.getpid()}-"


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success rename it over `path`, else delete it.

    An OSError without a file name (ENOSPC from a write) gets `path` as its file name, so
    the one-line CLI error names the file that could not be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as err:
        if err.filename is None:
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale_temps(folder: Path, names: Iterable[str]) -> list[Path]:
    """Delete `.<name>.*` temp files/folders in `folder` left by writers that died (kill -9);
    a live writer's (its pid still runs) stay. Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for name in names:
        for path in folder.glob(f".{glob.escape(name)}.*"):
            pid = re.match(r"(?:tmp-|old-)?(\d+)-", path.name[len(name) + 2 :])
            if pid and _alive(int(pid.group(1))):
                continue
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def write_text(text: str, path: Path) -> Path:
    """Write `text` to `path` atomically; returns `path`."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(obj: Any, path: Path) -> Path:
    """Write `obj` as indented JSON to `path` atomically; returns `path`."""
    return write_text(json.dumps(obj, indent=2) + "\n", path)


def print_json(obj: Any, indent: int | None = None) -> None:
    """`obj` as JSON and a newline on stdout, in one write: under torchrun every rank shares
    stdout, and `print` (the text, then the newline) let two ranks' lines interleave. One
    write of up to PIPE_BUF bytes to a pipe is atomic."""
    sys.stdout.flush()
    sys.stdout.write(json.dumps(obj, indent=indent) + "\n")
    sys.stdout.flush()


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
