"""Run locks: a flow run's stages recorded exactly as `dvc repro` records them in dvc.lock.

A Prefect run calls the stage functions directly rather than through DVC, so it writes what
`dvc.lock` would: for each stage its code deps and params (the lists dvc.yaml declares), its
data deps and its outs, each hashed by DVC's own code (dvc_data md5, `.dir` hashes for
folders, .dvcignore applied). Entries of a `run.lock.json` compare one to one with
`dvc.lock`: the same data and code give the same hashes.
"""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from dnc.config import Params
from dnc.io import write_json

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = "2.0"  # dvc.lock's schema; the stage entries below have its shape
LOCKED_STAGES = ("prepare", "train", "evaluate")
# dvc.yaml runs train and evaluate in one `run` stage per configuration; a flow run keeps them
# apart, each locked with the `run` stage's declared params and code.
DVC_STAGE = {"prepare": "prepare", "train": "run", "evaluate": "run"}


@cache
def _ignore(root: Path) -> Any:
    """The project's .dvcignore rules, as DVC applies them when it hashes a folder."""
    if not (root / ".dvc").is_dir():
        return None
    from dvc.repo import Repo

    return Repo(str(root)).dvcignore


def dvc_hash(path: Path, root: Path = ROOT) -> dict[str, Any]:
    """`{"hash": "md5", "md5", "size"[, "nfiles"]}` of a file or folder, as DVC computes it."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    path = Path(path).absolute()
    ignore = _ignore(root) if path.is_relative_to(root) else None
    fs = LocalFileSystem()
    with tempfile.TemporaryDirectory(prefix="dnc-hash-") as scratch:
        # dry_run: hash only; the object store is a required argument but stays empty.
        db = HashFileDB(fs, scratch)
        _, meta, obj = build(db, str(path), fs, "md5", dry_run=True, ignore=ignore)
    entry: dict[str, Any] = {"hash": "md5", "md5": obj.hash_info.value, "size": meta.size}
    if meta.isdir:
        entry["nfiles"] = meta.nfiles
    return entry


def dvc_stage_inputs(root: Path = ROOT) -> dict[str, dict[str, list[str]]]:
    """Per stage of dvc.yaml: its params sections and its code deps (deps no stage makes).

    Templated entries (`${item.cfg}`) are matrix details and skipped; without dvc.yaml every
    stage gets every params section and no code deps.
    """
    path = root / "dvc.yaml"
    specs = (yaml.safe_load(path.read_text()) or {}).get("stages", {}) if path.is_file() else {}
    made = {str(o) for s in specs.values() for o in _names(s.get("outs", []))}
    declared = {
        name: {
            "params": [p for p in _names(spec.get("params", [])) if "${" not in p],
            "code": [d for d in _names(spec.get("deps", [])) if "${" not in d and d not in made],
        }
        for name, spec in specs.items()
    }
    return {s: declared[DVC_STAGE[s]] for s in LOCKED_STAGES if DVC_STAGE[s] in declared}


def _names(entries: list[Any]) -> list[str]:
    """dvc.yaml list entries are a name or a one-key mapping `{name: options}`."""
    return [e if isinstance(e, str) else next(iter(e)) for e in entries]


def _entry(path: Path, root: Path) -> dict[str, Any]:
    path = Path(path).absolute()
    shown = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    return {"path": shown, **dvc_hash(path, root)}


def build_lock(
    params: Params,
    params_file: str,
    stage_io: dict[str, dict[str, Any]],
    root: Path = ROOT,
) -> dict[str, dict[str, Any]]:
    """The stages of a lock. `stage_io[stage]` has `cmd`, data `deps` and `outs` (paths);
    code deps and params come from dvc.yaml's declaration of the same stage."""
    inputs = dvc_stage_inputs(root)
    tree = params.model_dump(mode="json")
    out: dict[str, dict[str, Any]] = {}
    for name, io in stage_io.items():
        declared = inputs.get(name, {"params": list(tree), "code": []})
        deps = [root / c for c in declared["code"]] + list(io.get("deps", []))
        entry: dict[str, Any] = {"cmd": io["cmd"]} if io.get("cmd") else {}
        if deps:
            entry["deps"] = [_entry(p, root) for p in deps]
        if name in LOCKED_STAGES:
            chosen = {k: tree[k] for k in declared["params"] if k in tree}
            entry["params"] = {params_file: chosen}
        entry["outs"] = [_entry(p, root) for p in io["outs"]]
        out[name] = entry
    return out


def write_run_lock(
    path: Path,
    params: Params,
    params_file: str,
    overrides: dict[str, Any],
    stage_io: dict[str, dict[str, Any]],
    run: dict[str, Any],
) -> dict[str, Any]:
    """Hash the stages' deps and outs and write the lock to `path` (atomically)."""
    lock = {
        "schema": SCHEMA,
        "run": run,
        "overrides": overrides,
        "stages": build_lock(params, params_file, stage_io),
    }
    write_json(lock, Path(path))
    return lock
