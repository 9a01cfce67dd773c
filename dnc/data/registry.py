"""Dataset registry: what each dataset is (`DatasetInfo`) and how to read it raw (`load_raw`).

Every loader returns whole splits as uint8 tensors (N, C, H, W) with int64 labels; the small
datasets dnc targets fit in memory, and one in-memory form keeps preparation, hashing and the
batched view pipeline simple.

CIFAR-10/100 and SVHN are read by our own small readers of the published on-disk formats
(python pickle batches, MATLAB `.mat`), not through torchvision's classes: those refuse any file
whose md5 is not the one of the official release, so a user's re-packed copy or a test's tiny
file in the same format could not be read. torchvision is still what downloads them (with its
md5 checks) when `data.download` is true. The prepared form hashes what was read.
torchvision is imported only where needed: importing it costs ~3.5 s, more than torch itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from dnc.config import DataConfig
from dnc.data.formats import (
    FASHION_FILES,
    read_cifar_batches,
    read_image_split,
    read_sklearn_digits,
    read_svhn,
    unpack_idx,
)

_GET_TORCHVISION = (
    "put the extracted files there, or set data.download: true where the internet works"
)


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not where the config says; the message says how to get them."""


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset: shape, classes, normalisation and where it lives."""

    name: str
    num_classes: int
    in_chans: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_root: str  # "" = none (bundled, or the user must set data.root)
    how_to_get: str
    # How `augment: standard` crops: pad-and-crop by this many pixels; 0 = random-resized crop.
    crop_padding: int = 0
    hflip: bool = True  # False for digits: a mirrored 2 is not a 2


@dataclass(frozen=True)
class RawSplits:
    """A dataset as published: uint8 images (N, C, H, W) and int64 labels (N,) per split."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    info: DatasetInfo


_INFOS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            "fashion_mnist", 10, 1, 28, mean=(0.2860,), std=(0.3530,),
            default_root="/usr/share/datasets/fashion-mnist",
            how_to_get="apt-get install dataset-fashion-mnist, or set data.root to a folder "
            "with the four IDX .gz files (or FashionMNIST/raw/)",
            crop_padding=2,
        ),
        DatasetInfo(
            "digits", 10, 1, 8, mean=(0.3053,), std=(0.3759,), default_root="",
            how_to_get="bundled with scikit-learn (pip install scikit-learn)",
            crop_padding=1, hflip=False,
        ),
        DatasetInfo(
            "cifar10", 10, 3, 32, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
            default_root="~/.cache/dnc/datasets/cifar10",
            how_to_get=f"needs cifar-10-batches-py/ there; {_GET_TORCHVISION}", crop_padding=4,
        ),
        DatasetInfo(
            "cifar100", 100, 3, 32, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
            default_root="~/.cache/dnc/datasets/cifar100",
            how_to_get=f"needs cifar-100-python/ there; {_GET_TORCHVISION}", crop_padding=4,
        ),
        # House numbers, like digits, are not mirror-symmetric: no flip.
        DatasetInfo(
            "svhn", 10, 3, 32, mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970),
            default_root="~/.cache/dnc/datasets/svhn",
            how_to_get=f"needs train_32x32.mat and test_32x32.mat there; {_GET_TORCHVISION}",
            crop_padding=4, hflip=False,
        ),
        # num_classes is ImageNet's; load_raw replaces it with the folder's class count.
        DatasetInfo(
            "imagefolder", 1000, 3, 224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
            default_root="",
            how_to_get="set data.root to a folder with train/<class>/* and val/<class>/*",
        ),
    )
}  # fmt: skip


def list_datasets() -> list[str]:
    """Names of all registered datasets."""
    return sorted(_INFOS)


def get_dataset_info(name: str) -> DatasetInfo:
    """The registered `DatasetInfo` for `name`; unknown names raise ValueError."""
    if name not in _INFOS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())}")
    return _INFOS[name]


def cache_dir() -> Path:
    """Where dnc unpacks derived copies of datasets: `$DNC_CACHE/datasets` or ~/.cache/dnc/..."""
    return Path(os.environ.get("DNC_CACHE", "~/.cache/dnc")).expanduser() / "datasets"


def load_raw(cfg: DataConfig, image_size: int | None = None) -> RawSplits:
    """Read `cfg.dataset` whole into memory; `image_size` only applies to imagefolder."""
    info = get_dataset_info(cfg.dataset)
    root = _root(info, cfg)
    if cfg.dataset == "imagefolder":
        if cfg.root is None:
            raise DatasetNotFoundError(f"imagefolder: data.root is not set; {info.how_to_get}")
        size = image_size or cfg.image_size or info.image_size
        return _load_imagefolder(replace(info, image_size=size), root)
    return _LOADERS[cfg.dataset](info, root, cfg.download)


def resolve_info(cfg: DataConfig) -> DatasetInfo:
    """The dataset's info as training will see it: imagefolder's class count (its
    train/<class>/ folders) and image side (`data.image_size`), the registry's otherwise."""
    info = get_dataset_info(cfg.dataset)
    if cfg.dataset != "imagefolder":
        return info
    if cfg.root is None:
        raise DatasetNotFoundError(f"imagefolder: data.root is not set; {info.how_to_get}")
    train = _root(info, cfg) / "train"
    classes = _class_names(info, train)
    return replace(info, num_classes=len(classes), image_size=cfg.image_size or info.image_size)


def _class_names(info: DatasetInfo, train: Path) -> list[str]:
    if not train.is_dir():
        raise _missing(info, train)
    classes = sorted(p.name for p in train.iterdir() if p.is_dir())
    if not classes:
        raise _missing(info, train / "<class>")
    return classes


def _root(info: DatasetInfo, cfg: DataConfig) -> Path:
    if cfg.root is not None:
        return Path(cfg.root).expanduser()
    default = Path(info.default_root).expanduser()
    # The packaged Fashion-MNIST root is read-only: a download goes to the cache instead.
    if cfg.download and info.name == "fashion_mnist" and not default.is_dir():
        return cache_dir() / "fashion_mnist"
    return default


def _missing(info: DatasetInfo, path: Path) -> DatasetNotFoundError:
    return DatasetNotFoundError(f"{info.name}: no data at {path}; {info.how_to_get}")


def _splits(info: DatasetInfo, train: tuple, test: tuple) -> RawSplits:
    """Wrap (images, labels) numpy/tensor pairs as contiguous uint8 / int64 tensors."""
    images = [
        torch.as_tensor(np.ascontiguousarray(x)).to(torch.uint8) for x in (train[0], test[0])
    ]
    labels = [
        torch.as_tensor(np.asarray(y)).to(torch.int64).flatten() for y in (train[1], test[1])
    ]
    return RawSplits(images[0], labels[0], images[1], labels[1], info)


def _load_fashion_mnist(info: DatasetInfo, root: Path, download: bool) -> RawSplits:
    tv_root, fetch = root, False
    if all((root / f"{f}.gz").is_file() for f in FASHION_FILES):
        tv_root = unpack_idx(root, cache_dir())  # the Debian package's layout
    elif not all((root / "FashionMNIST" / "raw" / f).is_file() for f in FASHION_FILES):
        if not download:  # neither layout, nothing to fetch with
            raise _missing(info, root)
        fetch = True
    from torchvision.datasets import FashionMNIST  # importing torchvision takes ~3.5 s

    parts = []
    for train in (True, False):
        ds = FashionMNIST(tv_root, train=train, download=fetch)
        parts.append((ds.data.unsqueeze(1), ds.targets))  # (N, 1, 28, 28)
    return _splits(info, parts[0], parts[1])


def _load_digits(info: DatasetInfo, root: Path, download: bool) -> RawSplits:
    images, labels = read_sklearn_digits()
    if images is None:
        raise _missing(info, Path("sklearn/datasets/data/digits.csv.gz"))
    # No test split ships: hold out a fixed 20 %, independent of the run seed.
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0)).numpy()
    n_test = len(labels) // 5
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    return _splits(info, (images[train], labels[train]), (images[test], labels[test]))


# name -> (folder, train files, test files, label key, meta file, torchvision class name)
_CIFAR_LAYOUTS = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "labels", "batches.meta", "CIFAR10"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", "meta", "CIFAR100"),
}  # fmt: skip


def _load_cifar(info: DatasetInfo, root: Path, download: bool) -> RawSplits:
    folder, train_files, test_files, label_key, meta, tv_class = _CIFAR_LAYOUTS[info.name]
    if download:
        import torchvision.datasets

        # Fetches and md5-checks the archive, then we read the extracted files ourselves.
        getattr(torchvision.datasets, tv_class)(root, train=True, download=True)
    for name in [*train_files, *test_files, meta]:
        if not (root / folder / name).is_file():
            raise _missing(info, root / folder / name)
    train = read_cifar_batches(root / folder, train_files, label_key)
    return _splits(info, train, read_cifar_batches(root / folder, test_files, label_key))


def _load_svhn(info: DatasetInfo, root: Path, download: bool) -> RawSplits:
    if download:
        from torchvision.datasets import SVHN

        for split in ("train", "test"):
            SVHN(root, split=split, download=True)
    paths = [root / "train_32x32.mat", root / "test_32x32.mat"]
    for path in paths:
        if not path.is_file():
            raise _missing(info, path)
    return _splits(info, read_svhn(paths[0]), read_svhn(paths[1]))


def _load_imagefolder(info: DatasetInfo, root: Path) -> RawSplits:
    """Decode every image of root/{train,val}/<class>/ into a square uint8 tensor.

    Eager decoding suits small folders; a full ImageNet (~150 GB decoded at 224 px) needs a
    lazy, per-batch decoding path, which dnc does not provide yet.
    """
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise _missing(info, root / split)
    classes = _class_names(info, root / "train")
    train = read_image_split(root / "train", classes, info.image_size)
    test = read_image_split(root / "val", classes, info.image_size)
    return _splits(replace(info, num_classes=len(classes)), train, test)


_LOADERS: dict[str, Callable[[DatasetInfo, Path, bool], RawSplits]] = {
    "fashion_mnist": _load_fashion_mnist,
    "digits": _load_digits,
    "cifar10": _load_cifar,
    "cifar100": _load_cifar,
    "svhn": _load_svhn,
}
