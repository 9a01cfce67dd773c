"""Readers of the published on-disk dataset formats, returning numpy arrays.

Each returns `(images uint8 (N, C, H, W), labels int64 (N,))`; the registry decides which
files to read and turns a missing one into a `DatasetNotFoundError`.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import pickle
import shutil
import uuid
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# torchvision.datasets.folder's list, copied so reading a folder does not import torchvision.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

FASHION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def unpack_idx(source: Path, cache: Path) -> Path:
    """Gunzip the IDX files once into the cache, atomically; returns torchvision's root."""
    # Keyed by the source's path, sizes and mtimes, so a changed source unpacks afresh.
    stats = [(source / f"{f}.gz").stat() for f in FASHION_FILES]
    fingerprint = repr((str(source.resolve()), [(s.st_size, s.st_mtime_ns) for s in stats]))
    final = cache / f"fashion_mnist-{hashlib.sha256(fingerprint.encode()).hexdigest()[:16]}"
    if final.is_dir():
        return final
    tmp = cache / f".tmp-{uuid.uuid4().hex}"
    raw = tmp / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in FASHION_FILES:
        with gzip.open(source / f"{name}.gz") as src, open(raw / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    try:
        tmp.rename(final)
    except OSError:  # another process unpacked it first; its copy is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def read_sklearn_digits() -> tuple:
    """scikit-learn's bundled 8x8 digits, values 0..16 scaled to uint8; (None, None) if absent.

    Read from the csv that ships inside the package (64 pixels + label per row) rather than via
    `sklearn.datasets.load_digits`: importing scikit-learn costs ~3.5 s and dnc needs only this.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None, None
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        return None, None
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)  # (1797, 65)
    images = np.rint(table[:, :64] * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 1, 8, 8)
    return images, table[:, 64].astype(np.int64)


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches but refuses any class except numpy's array rebuilders."""

    _ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("_codecs", "encode"),  # how Python 3 protocol-2 pickles store raw bytes
        }
    )

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")
        return super().find_class(module, name)


def read_cifar_batches(folder: Path, files: list[str], label_key: str) -> tuple:
    """Concatenate CIFAR python-pickle batches: `data` rows (N, 3072) and `label_key` lists."""
    images, labels = [], []
    for name in files:
        with open(folder / name, "rb") as fh:
            batch = _NumpyUnpickler(fh, encoding="latin1").load()
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def read_svhn(path: Path) -> tuple:
    """One SVHN cropped-digits `.mat` file: X (32, 32, 3, N) and y (N, 1) with 10 for 0."""
    import scipy.io  # torchvision's SVHN needs scipy too; only this dataset imports it

    mat = scipy.io.loadmat(path)
    images = np.transpose(mat["X"], (3, 2, 0, 1))  # (H, W, C, N) -> (N, C, H, W)
    labels = mat["y"].astype(np.int64).flatten()
    labels[labels == 10] = 0  # the format stores digit 0 as class 10
    return images, labels


def read_image_split(folder: Path, classes: list[str], size: int) -> tuple:
    """Images of folder/<class>/* for `classes` (label = index), squared to `size`."""
    images, labels = [], []
    for label, name in enumerate(classes):
        paths = sorted((folder / name).glob("*")) if (folder / name).is_dir() else []
        for path in paths:
            if path.suffix.lower() in IMG_EXTENSIONS:
                images.append(_read_image(path, size))
                labels.append(label)
    stacked = np.stack(images) if images else np.zeros((0, 3, size, size), np.uint8)
    return stacked, np.asarray(labels, np.int64)


def _read_image(path: Path, size: int) -> np.ndarray:
    """RGB, short side resized to `size`, centre-cropped square: uint8 (3, size, size)."""
    with Image.open(path) as img:
        fitted = ImageOps.fit(img.convert("RGB"), (size, size), Image.Resampling.BILINEAR)
    return np.asarray(fitted).transpose(2, 0, 1)  # (H, W, C) -> (C, H, W)
