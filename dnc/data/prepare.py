"""The prepared form: seeded train/val/test splits as hashed tensor files (the DVC prepare stage).

`out_dir/{train,val,test}.pt` each hold `{"images": uint8 (N, C, H, W), "labels": int64 (N,)}`;
`out_dir/meta.json` records the dataset facts, counts, class counts, the split seed
(`data.split_seed`), the data config and each file's sha256, which `load_prepared` checks before
trusting a file; `check_meta` checks that the data was prepared for the params at hand.
Re-preparing with the same config writes byte-identical files, so DVC sees no change.

Splits: validation is the first `val_size` images of a seeded permutation of the published
train split; the training cap keeps a seeded prefix of the rest, so the validation set does not
move when `train_size` changes and smaller training sets are subsets of larger ones.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dnc.config import ConfigError, DataConfig
from dnc.data.registry import DatasetInfo, RawSplits, load_raw
from dnc.io import clean_stale_temps, derive_seed

SPLITS = ("train", "val", "test")
FORMAT = "dnc.prepared/1"


class PreparedDataError(ValueError):
    """A prepared file does not match its meta.json (changed, truncated or malformed)."""


@dataclass(frozen=True)
class ImageSplit:
    """One split held in memory: uint8 images (N, C, H, W) and int64 labels (N,)."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class PreparedData:
    """The three splits plus what describes them (`info`, and the `meta` of meta.json)."""

    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    info: DatasetInfo
    meta: dict[str, Any]


def split_raw(raw: RawSplits, cfg: DataConfig) -> dict[str, ImageSplit]:
    """Carve the validation split seeded by `cfg.split_seed` and apply the size caps."""
    seed = cfg.split_seed
    n_train = len(raw.train_labels)
    if cfg.val_size >= n_train:
        raise ConfigError(
            f"data.val_size: {cfg.val_size} leaves no training images ({n_train} in "
            f"{raw.info.name}'s train split)"
        )
    order = torch.randperm(n_train, generator=torch.Generator().manual_seed(derive_seed(seed)))
    test_gen = torch.Generator().manual_seed(derive_seed(seed, "test"))
    test_order = torch.randperm(len(raw.test_labels), generator=test_gen)
    picks = {  # split -> (images, labels, indices); a None cap keeps all
        "train": (raw.train_images, raw.train_labels, order[cfg.val_size :][: cfg.train_size]),
        "val": (raw.train_images, raw.train_labels, order[: cfg.val_size]),
        "test": (raw.test_images, raw.test_labels, test_order[: cfg.test_size]),
    }
    # Sorted indices keep the published order within a split (shuffling is the loader's job);
    # indexing also copies, so each saved tensor owns exactly its own storage.
    return {
        name: ImageSplit(images[idx.sort().values], labels[idx.sort().values])
        for name, (images, labels, idx) in picks.items()
    }


def _meta(splits: dict[str, ImageSplit], info: DatasetInfo, cfg: DataConfig) -> dict:
    return {
        "format": FORMAT,
        "dataset": info.name,
        "info": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(info).items()},
        "split_seed": cfg.split_seed,
        "config": cfg.model_dump(mode="json"),
        "counts": {name: len(split) for name, split in splits.items()},
        "class_counts": {
            name: torch.bincount(split.labels, minlength=info.num_classes).tolist()
            for name, split in splits.items()
        },
    }


def prepare_in_memory(cfg: DataConfig, image_size: int | None = None) -> PreparedData:
    """The splits `prepare_dataset` would write, without writing them (for quick runs)."""
    raw = load_raw(cfg, image_size)
    splits = split_raw(raw, cfg)
    return PreparedData(**splits, info=raw.info, meta=_meta(splits, raw.info, cfg))


def clean_stale(out_dir: Path) -> list[Path]:
    """Remove the temp folders a killed prepare left beside `out_dir` (`.<name>.tmp-*`)."""
    return clean_stale_temps(Path(out_dir).parent, [Path(out_dir).name])


def prepare_dataset(
    cfg: DataConfig, out_dir: Path, image_size: int | None = None
) -> dict[str, Any]:
    """Write the prepared splits and meta.json to `out_dir` atomically; returns the meta."""
    out_dir = Path(out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "meta.json").is_file():
        raise FileExistsError(f"{out_dir}: exists and is not prepared data; refusing to replace")
    clean_stale(out_dir)
    data = prepare_in_memory(cfg, image_size)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Everything goes to a sibling temp dir renamed into place, so an interrupted prepare
    # leaves the previous output (or none), never a half-written one. The pid in the name
    # lets the next start remove a killed prepare's folder (`clean_stale`).
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        files = {}
        for name in SPLITS:
            split = getattr(data, name)
            path = tmp / f"{name}.pt"
            torch.save({"images": split.images, "labels": split.labels}, path)
            files[path.name] = {"sha256": _sha256(path.read_bytes()), "bytes": path.stat().st_size}
        meta = {**data.meta, "files": files}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _swap_in(tmp: Path, out_dir: Path) -> None:
    """Replace `out_dir` by `tmp` (a directory cannot be renamed over a non-empty one)."""
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_prepared(out_dir: Path) -> PreparedData:
    """Load the splits written by `prepare_dataset`, verifying each file's sha256."""
    out_dir = Path(out_dir)
    meta_path = out_dir / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{out_dir}: no prepared data (no meta.json); run `python -m dnc prepare --out "
            f"{out_dir}` or `dvc repro prepare`"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise PreparedDataError(f"{meta_path}: not valid JSON ({err}); re-run prepare") from err
    found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
    if found != FORMAT:
        raise PreparedDataError(f"{meta_path}: format {found!r}, expected {FORMAT}")
    try:
        return _load_splits(out_dir, meta)
    except (KeyError, TypeError) as err:
        raise PreparedDataError(f"{meta_path}: malformed ({err!r}); re-run prepare") from err


def _load_splits(out_dir: Path, meta: dict) -> PreparedData:
    known = {f.name for f in fields(DatasetInfo)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["info"].items()}
    info = DatasetInfo(**{k: v for k, v in values.items() if k in known})
    splits = {name: _load_split(out_dir / f"{name}.pt", meta, info) for name in SPLITS}
    return PreparedData(**splits, info=info, meta=meta)


def _load_split(path: Path, meta: dict, info: DatasetInfo) -> ImageSplit:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the prepared data; re-run prepare")
    data = path.read_bytes()
    expected = meta["files"][path.name]["sha256"]
    if _sha256(data) != expected:
        raise PreparedDataError(
            f"{path}: sha256 {_sha256(data)[:12]}... does not match meta.json "
            f"({expected[:12]}...); the file changed after prepare - re-run prepare"
        )
    try:
        payload = torch.load(io.BytesIO(data), weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise PreparedDataError(f"{path}: not a readable tensor file; re-run prepare") from err
    images, labels = payload["images"], payload["labels"]
    shape = (info.in_chans, info.image_size, info.image_size)
    if images.dtype != torch.uint8 or images.shape[1:] != shape or labels.dtype != torch.int64:
        raise PreparedDataError(f"{path}: expected uint8 images (N, {shape}) and int64 labels")
    if len(images) != len(labels) or len(labels) != meta["counts"][path.stem]:
        raise PreparedDataError(f"{path}: image/label counts disagree with meta.json")
    return ImageSplit(images, labels)


# The data keys that decide which images land in which split; the others (augment, workers)
# are read at training time and may differ from prepare's.
SPLIT_KEYS = ("dataset", "split_seed", "val_size", "train_size", "test_size", "image_size")


def check_meta(meta: dict[str, Any], cfg: DataConfig, where: Path) -> None:
    """The prepared data at `where` was made for `cfg`: else one error naming the key."""
    recorded = {**meta.get("config", {}), "dataset": meta.get("dataset")}
    if "split_seed" not in recorded:  # prepared before split_seed existed
        recorded["split_seed"] = meta.get("split_seed")
    for key in SPLIT_KEYS:
        want, have = getattr(cfg, key), recorded.get(key)
        if want != have:
            raise ConfigError(
                f"data.{key}: {where} was prepared with {key}={have!r}, the params say "
                f"{want!r}; re-run prepare (dvc repro prepare)"
            )
