"""Datasets, their prepared (hashed) form, and the multi-view loaders SplitNet trains on.

raw = load_raw(cfg)                            # whole published splits, uint8 (N, C, H, W)
meta = prepare_dataset(cfg, out_dir)           # split by cfg.split_seed; meta.json (sha256)
data = load_prepared(out_dir)                  # or prepare_in_memory(cfg)
loaders = make_loaders(data, cfg, 128, 512, num_views=4, seed=seed)
for views, labels in loaders.train_epoch(epoch):  # (V, B, C, H, W) float32, (B,) int64
    ...
"""

from dnc.data.augment import BatchViews
from dnc.data.prepare import (
    ImageSplit,
    PreparedData,
    PreparedDataError,
    load_prepared,
    prepare_dataset,
    prepare_in_memory,
    split_raw,
)
from dnc.data.registry import (
    DatasetInfo,
    DatasetNotFoundError,
    RawSplits,
    cache_dir,
    get_dataset_info,
    list_datasets,
    load_raw,
    resolve_info,
)
from dnc.data.views import (
    Loaders,
    MultiViewDataset,
    TrainLoader,
    build_transform,
    make_loaders,
)

__all__ = [
    "BatchViews",
    "DatasetInfo",
    "DatasetNotFoundError",
    "ImageSplit",
    "Loaders",
    "MultiViewDataset",
    "PreparedData",
    "PreparedDataError",
    "RawSplits",
    "TrainLoader",
    "build_transform",
    "cache_dir",
    "get_dataset_info",
    "list_datasets",
    "load_prepared",
    "load_raw",
    "resolve_info",
    "make_loaders",
    "prepare_dataset",
    "prepare_in_memory",
    "split_raw",
]
