"""dnc.data registry and prepared form: real digits/Fashion-MNIST, tiny files in real formats."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dnc.config import DataConfig
from dnc.data import (
    DatasetInfo,
    DatasetNotFoundError,
    PreparedDataError,
    RawSplits,
    get_dataset_info,
    list_datasets,
    load_prepared,
    load_raw,
    prepare_dataset,
    prepare_in_memory,
    split_raw,
)

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")


def data_cfg(**overrides: object) -> DataConfig:
    """A complete DataConfig for digits, with `overrides` applied."""
    fields = dict(
        dataset="digits",
        split_seed=0,
        root=None,
        download=False,
        val_size=100,
        train_size=None,
        test_size=None,
        image_size=None,
        augment="standard",
        autoaugment=False,
        random_erasing=0.0,
        erasing_scale=[0.02, 0.33],
        erasing_ratio=[0.3, 3.3],
        num_workers=0,
    )
    return DataConfig(**{**fields, **overrides})


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DNC_CACHE", str(tmp_path / "cache"))


def _rows(images: torch.Tensor, labels: torch.Tensor) -> list[bytes]:
    """One sortable key per (image, label) pair, to compare splits as multisets."""
    return sorted(
        img.numpy().tobytes() + bytes([int(y)]) for img, y in zip(images, labels, strict=True)
    )


# --- registry -------------------------------------------------------------------------------


def test_registry_lists_every_dataset():
    assert set(list_datasets()) == {
        "fashion_mnist",
        "digits",
        "cifar10",
        "cifar100",
        "svhn",
        "imagefolder",
    }
    info = get_dataset_info("cifar100")
    assert (info.num_classes, info.in_chans, info.image_size) == (100, 3, 32)
    assert len(info.mean) == len(info.std) == info.in_chans


def test_unknown_dataset_lists_known_names():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'.*cifar10.*fashion_mnist"):
        get_dataset_info("mnist")


def test_missing_root_says_where_and_how(tmp_path: Path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as err:
        load_raw(data_cfg(dataset="fashion_mnist", root=str(missing)))
    assert isinstance(err.value, FileNotFoundError)
    message = str(err.value)
    assert str(missing) in message and "apt-get install dataset-fashion-mnist" in message
    assert "\n" not in message
    with pytest.raises(DatasetNotFoundError, match=r"cifar-10-batches-py.*data\.download"):
        load_raw(data_cfg(dataset="cifar10", root=str(missing)))
    with pytest.raises(DatasetNotFoundError, match="data.root is not set"):
        load_raw(data_cfg(dataset="imagefolder"))


def test_digits_raw_has_a_fixed_test_split():
    raw = load_raw(data_cfg())
    assert raw.train_images.shape == (1438, 1, 8, 8) and raw.test_images.shape == (359, 1, 8, 8)
    assert raw.train_images.dtype == torch.uint8 and raw.train_labels.dtype == torch.int64
    assert int(raw.train_images.max()) == 255 and set(raw.test_labels.tolist()) == set(range(10))
    assert torch.equal(load_raw(data_cfg()).test_images, raw.test_images)


@pytest.mark.skipif(not FASHION_ROOT.is_dir(), reason="needs apt package dataset-fashion-mnist")
def test_fashion_mnist_from_the_debian_files(tmp_path: Path):
    raw = load_raw(data_cfg(dataset="fashion_mnist"))
    assert raw.train_images.shape == (60000, 1, 28, 28) and len(raw.test_labels) == 10000
    assert raw.info.num_classes == 10 and torch.bincount(raw.train_labels).tolist() == [6000] * 10
    assert len(list((tmp_path / "cache" / "datasets").glob("fashion_mnist-*"))) == 1
    data = prepare_in_memory(
        data_cfg(dataset="fashion_mnist", val_size=50, train_size=300, test_size=200)
    )
    assert (len(data.train), len(data.val), len(data.test)) == (300, 50, 200)
    assert data.train.images.shape[1:] == (1, 28, 28)


def _write_cifar(root: Path, name: str, n: int, classes: int) -> np.ndarray:
    """CIFAR python-pickle batches with the real names, keys and meta; returns one image."""
    rng = np.random.default_rng(0)
    cifar10 = name == "cifar10"
    folder = root / ("cifar-10-batches-py" if cifar10 else "cifar-100-python")
    folder.mkdir(parents=True)
    batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    files = batches if cifar10 else ["train", "test"]
    for file in files:
        labels = [int(y) for y in rng.integers(0, classes, n)]
        batch = {
            "batch_label": file,
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "filenames": [f"img_{i}.png" for i in range(n)],
        }
        batch.update(
            {"labels": labels} if cifar10 else {"fine_labels": labels, "coarse_labels": labels}
        )
        with open(folder / file, "wb") as fh:
            pickle.dump(batch, fh, protocol=2)
    names = [f"class{i}" for i in range(classes)]
    meta = (
        {"label_names": names}
        if cifar10
        else {"fine_label_names": names, "coarse_label_names": names}
    )
    with open(folder / ("batches.meta" if cifar10 else "meta"), "wb") as fh:
        pickle.dump(meta, fh, protocol=2)
    with open(folder / files[0], "rb") as fh:
        return pickle.load(fh)["data"][0]


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_reads_the_real_pickle_format(tmp_path: Path, name: str, classes: int):
    first = _write_cifar(tmp_path, name, n=20, classes=classes)
    raw = load_raw(data_cfg(dataset=name, root=str(tmp_path)))
    train_n = 100 if name == "cifar10" else 20
    assert raw.train_images.shape == (train_n, 3, 32, 32) and raw.test_images.shape[0] == 20
    # Rows are 1024 red, then green, then blue values, each row-major.
    assert torch.equal(raw.train_images[0], torch.from_numpy(first.reshape(3, 32, 32)))
    assert raw.info.num_classes == classes and int(raw.train_labels.max()) < classes


def test_cifar_reader_refuses_pickled_code(tmp_path: Path):
    _write_cifar(tmp_path, "cifar10", n=4, classes=10)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as fh:
        pickle.dump({"data": np.zeros((1, 3072), np.uint8), "labels": Path("x")}, fh, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_raw(data_cfg(dataset="cifar10", root=str(tmp_path)))


def test_svhn_reads_the_real_mat_format(tmp_path: Path):
    scipy_io = pytest.importorskip("scipy.io")
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 6)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # (H, W, C, N)
        y = (np.arange(n, dtype=np.uint8) % 10 + 1)[:, None]  # (N, 1), digits 1..9 then 10
        scipy_io.savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y})
    raw = load_raw(data_cfg(dataset="svhn", root=str(tmp_path)))
    assert raw.train_images.shape == (12, 3, 32, 32) and raw.test_images.shape == (6, 3, 32, 32)
    assert raw.train_labels.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]  # 10 means 0
    saved = scipy_io.loadmat(tmp_path / "train_32x32.mat")["X"]
    assert torch.equal(raw.train_images[3, 1], torch.from_numpy(saved[:, :, 1, 3]))


def test_imagefolder_decodes_and_squares_images(tmp_path: Path):
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 3), ("val", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
                ext = "png" if i % 2 else "jpg"
                Image.fromarray(pixels).save(tmp_path / split / cls / f"{i}.{ext}")
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    raw = load_raw(data_cfg(dataset="imagefolder", root=str(tmp_path)), image_size=16)
    assert raw.train_images.shape == (6, 3, 16, 16) and raw.test_images.shape == (4, 3, 16, 16)
    assert raw.train_labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert raw.info.num_classes == 2 and raw.info.image_size == 16
    data = prepare_in_memory(
        data_cfg(dataset="imagefolder", root=str(tmp_path), val_size=2), image_size=16
    )
    assert (len(data.train), len(data.val), len(data.test)) == (4, 2, 4)


# --- splits and the prepared form -----------------------------------------------------------


def _indexed_raw(n_train: int = 1000, n_test: int = 300) -> RawSplits:
    """Synthetic raw splits whose image i carries i in its pixels, so indices are visible."""

    def images(n: int) -> torch.Tensor:
        idx = torch.arange(n)
        return torch.stack([idx // 256, idx % 256], 1).to(torch.uint8).view(n, 1, 1, 2)

    info = DatasetInfo("digits", 10, 1, 1, (0.5,), (0.5,), "", "")
    return RawSplits(
        images(n_train),
        torch.arange(n_train) % 10,
        images(n_test),
        torch.arange(n_test) % 10,
        info,
    )


def _indices(images: torch.Tensor) -> set[int]:
    flat = images.view(len(images), 2).long()
    return set((flat[:, 0] * 256 + flat[:, 1]).tolist())


def test_split_raw_is_disjoint_capped_and_seeded():
    raw = _indexed_raw()
    cfg = data_cfg(val_size=100, train_size=400, test_size=50)
    splits = split_raw(raw, cfg)
    train, val = _indices(splits["train"].images), _indices(splits["val"].images)
    assert (len(train), len(val), len(splits["test"])) == (400, 100, 50) and not train & val
    again = split_raw(raw, cfg)
    assert all(torch.equal(again[k].images, splits[k].images) for k in splits)
    other = split_raw(raw, cfg.model_copy(update={"split_seed": 1}))
    assert _indices(other["val"].images) != val
    # The validation set does not move when the training cap changes.
    uncapped = split_raw(raw, data_cfg(val_size=100, train_size=None))
    assert _indices(uncapped["val"].images) == val and len(uncapped["train"]) == 900
    assert train <= _indices(uncapped["train"].images)


def test_val_size_must_leave_training_images():
    with pytest.raises(ValueError, match="data.val_size"):
        split_raw(_indexed_raw(n_train=10), data_cfg(val_size=10))


def test_prepare_round_trip_verifies_hashes(tmp_path: Path):
    cfg = data_cfg(val_size=100, train_size=500, test_size=200)
    meta = prepare_dataset(cfg.model_copy(update={"split_seed": 3}), tmp_path / "prepared")
    assert meta["counts"] == {"train": 500, "val": 100, "test": 200}
    assert sum(meta["class_counts"]["val"]) == 100 and meta["config"]["val_size"] == 100
    for name in ("train.pt", "val.pt", "test.pt"):
        digest = hashlib.sha256((tmp_path / "prepared" / name).read_bytes()).hexdigest()
        assert meta["files"][name]["sha256"] == digest
    assert json.loads((tmp_path / "prepared" / "meta.json").read_text()) == meta
    data = load_prepared(tmp_path / "prepared")
    memory = prepare_in_memory(cfg.model_copy(update={"split_seed": 3}))
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(data, name).images, getattr(memory, name).images)
        assert torch.equal(getattr(data, name).labels, getattr(memory, name).labels)
    assert data.info == get_dataset_info("digits") and data.train.images.dtype == torch.uint8
    raw = load_raw(cfg)
    assert set(_rows(data.val.images, data.val.labels)) <= set(
        _rows(raw.train_images, raw.train_labels)
    )


def test_prepare_is_byte_reproducible_and_seeded(tmp_path: Path):
    cfg = data_cfg(train_size=300)
    first = prepare_dataset(cfg, tmp_path / "a")["files"]
    assert prepare_dataset(cfg, tmp_path / "a")["files"] == first  # replaces in place
    assert (
        prepare_dataset(cfg.model_copy(update={"split_seed": 1}), tmp_path / "b")["files"][
            "val.pt"
        ]
        != first["val.pt"]
    )
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["a", "b"]


def test_tampered_file_is_detected(tmp_path: Path):
    prepare_dataset(data_cfg(train_size=200), tmp_path / "p")
    path = tmp_path / "p" / "val.pt"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(PreparedDataError, match=r"val\.pt: sha256 .* does not match"):
        load_prepared(tmp_path / "p")


def test_missing_prepared_dir_says_how_to_make_it(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"nothing_here.*python -m dnc prepare.*dvc repro"):
        load_prepared(tmp_path / "nothing_here")


def test_interrupted_prepare_leaves_no_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    real_save = torch.save

    def save_then_die(obj: object, path: Path) -> None:
        real_save(obj, path)
        if Path(path).name == "val.pt":
            raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(data_cfg(), tmp_path / "p")
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == []  # no temp dirs


def test_prepare_refuses_to_replace_a_foreign_directory(tmp_path: Path):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("...")
    with pytest.raises(FileExistsError, match="not prepared data"):
        prepare_dataset(data_cfg(), tmp_path / "precious")
    assert (tmp_path / "precious" / "thesis.tex").is_file()
