"""dnc.data views: per-member augmentation, loader shapes and the (seed, epoch) contract."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dnc.config import DataConfig
from dnc.data import (
    BatchViews,
    ImageSplit,
    MultiViewDataset,
    PreparedData,
    build_transform,
    get_dataset_info,
    make_loaders,
    prepare_in_memory,
)
from dnc.data.augment import random_erasing, random_hflip, random_pad_crop, random_resized_crop


def data_cfg(**overrides: object) -> DataConfig:
    """A complete DataConfig for digits, with `overrides` applied."""
    fields = dict(
        dataset="digits",
        split_seed=0,
        root=None,
        download=False,
        val_size=100,
        train_size=300,
        test_size=150,
        image_size=None,
        augment="standard",
        autoaugment=False,
        random_erasing=0.0,
        erasing_scale=[0.02, 0.33],
        erasing_ratio=[0.3, 3.3],
        num_workers=0,
    )
    return DataConfig(**{**fields, **overrides})


@pytest.fixture(scope="module")
def digits() -> PreparedData:
    return prepare_in_memory(data_cfg())


def _epoch(data: PreparedData, cfg: DataConfig, epoch: int, seed: int = 0) -> list:
    loaders = make_loaders(data, cfg, batch_size=64, eval_batch_size=100, num_views=4, seed=seed)
    return list(loaders.train_epoch(epoch))


def test_train_batches_are_view_major(digits: PreparedData):
    loaders = make_loaders(digits, data_cfg(), 64, 100, num_views=4, seed=0)
    batches = list(loaders.train_epoch(0))
    assert len(batches) == len(loaders.train_epoch(0)) == len(loaders.train) == 300 // 64
    views, labels = batches[0]
    assert views.shape == (4, 64, 1, 8, 8) and views.dtype == torch.float32
    assert labels.shape == (64,) and labels.dtype == torch.int64
    seen = torch.cat([labels for _, labels in batches])
    assert len(seen) == 256  # the ragged tail is dropped, a different one each epoch


def test_eval_loaders_are_single_view_and_ordered(digits: PreparedData):
    loaders = make_loaders(digits, data_cfg(), 64, 100, num_views=4, seed=0)
    images, labels = next(iter(loaders.test))
    assert images.shape == (100, 1, 8, 8) and images.dtype == torch.float32
    assert torch.equal(torch.cat([y for _, y in loaders.test]), digits.test.labels)
    assert [len(y) for _, y in loaders.val] == [100]
    expected = build_transform(digits.info, data_cfg(), train=False)(digits.test.images[0])
    torch.testing.assert_close(images[0], expected)


def test_views_differ_per_member_and_are_seeded(digits: PreparedData):
    first = _epoch(digits, data_cfg(), epoch=2)
    views = first[0][0]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.equal(views[i], views[j]), (i, j)
    again = _epoch(digits, data_cfg(), epoch=2)
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for a, b in zip(first, again, strict=True)
    )
    later = _epoch(digits, data_cfg(), epoch=3)
    assert not torch.equal(first[0][1], later[0][1])  # reshuffled
    assert not torch.equal(_epoch(digits, data_cfg(), epoch=2, seed=1)[0][0], views)


@pytest.mark.integration
def test_an_epoch_does_not_depend_on_earlier_epochs_or_workers(digits: PreparedData):
    loaders = make_loaders(digits, data_cfg(), 64, 100, num_views=2, seed=5)
    for _ in loaders.train_epoch(0):
        pass
    resumed = make_loaders(digits, data_cfg(num_workers=2), 64, 100, num_views=2, seed=5)
    for (v1, y1), (v2, y2) in zip(loaders.train_epoch(1), resumed.train_epoch(1), strict=True):
        assert torch.equal(v1, v2) and torch.equal(y1, y2)


def test_augment_none_gives_identical_normalised_views(digits: PreparedData):
    views, _ = _epoch(digits, data_cfg(augment="none", random_erasing=0.5), epoch=0)[0]
    assert all(torch.equal(views[0], views[i]) for i in range(1, 4))
    everything = torch.cat([v[0] for v, _ in _epoch(digits, data_cfg(augment="none"), 0)])
    assert abs(everything.mean().item()) < 0.15 and abs(everything.std().item() - 1) < 0.15


def test_pad_crop_is_a_shifted_window_of_the_padded_image():
    images = torch.randint(0, 256, (32, 3, 6, 6), dtype=torch.uint8)
    out = random_pad_crop(images, 2, torch.Generator().manual_seed(0))
    padded = F.pad(images, (2, 2, 2, 2))
    windows = [padded[:, :, y : y + 6, x : x + 6] for y in range(5) for x in range(5)]
    for i in range(32):
        assert any(torch.equal(out[i], w[i]) for w in windows)
    assert len({out[i].sum().item() for i in range(32)}) > 1


def test_flip_erase_and_resized_crop():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(64, 3, 16, 16) + 1.0  # no zeros before erasing
    flipped = random_hflip(images, g)
    mirrored = [torch.equal(flipped[i], images[i].flip(-1)) for i in range(64)]
    assert 10 < sum(mirrored) < 54
    erased = random_erasing(images, 1.0, g)
    holes = (erased == 0).all(dim=1).flatten(1).sum(1)  # zeroed pixels per image
    assert (holes > 0).float().mean() > 0.8 and (holes < 16 * 16).all()
    assert torch.equal(random_erasing(images, 0.0, g), images)
    cropped = random_resized_crop(images, True, g)
    assert cropped.shape == images.shape and torch.isfinite(cropped).all()


def test_batch_views_on_rgb_and_large_images():
    for name, size in (("cifar10", 32), ("imagefolder", 24)):
        info = get_dataset_info(name)
        info = type(info)(**{**info.__dict__, "image_size": size})
        views = BatchViews(info, data_cfg(random_erasing=0.5), num_views=3)
        batch = torch.randint(0, 256, (5, 3, size, size), dtype=torch.uint8)
        out = views(batch, torch.Generator().manual_seed(0))
        assert out.shape == (3, 5, 3, size, size) and out.dtype == torch.float32
        assert not torch.equal(out[0], out[1])


def test_per_sample_transforms_and_dataset(digits: PreparedData):
    transform = build_transform(digits.info, data_cfg(random_erasing=0.3), train=True)
    names = [type(t).__name__ for t in transform.transforms]
    assert names == ["RandomCrop", "ToDtype", "Normalize", "RandomErasing"]  # digits: no flip
    cifar = build_transform(get_dataset_info("cifar10"), data_cfg(), train=True)
    assert "RandomHorizontalFlip" in [type(t).__name__ for t in cifar.transforms]
    dataset = MultiViewDataset(digits.train, transform, num_views=4)
    views, label = dataset[0]
    assert views.shape == (4, 1, 8, 8) and views.dtype == torch.float32 and label.ndim == 0
    assert not all(torch.equal(views[0], views[i]) for i in range(1, 4))
    single = MultiViewDataset(digits.train, build_transform(digits.info, data_cfg(), False), 1)
    assert single[0][0].shape == (1, 8, 8) and len(single) == 300


def test_small_split_keeps_its_only_batch():
    split = ImageSplit(
        torch.zeros(10, 1, 8, 8, dtype=torch.uint8), torch.zeros(10, dtype=torch.int64)
    )
    data = PreparedData(split, split, split, get_dataset_info("digits"), {})
    loaders = make_loaders(data, data_cfg(), batch_size=64, eval_batch_size=4, num_views=2, seed=0)
    assert [v.shape for v, _ in loaders.train_epoch(0)] == [(2, 10, 1, 8, 8)]
    assert [len(y) for _, y in loaders.test] == [4, 4, 2]
