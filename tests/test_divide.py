"""The divide rule against the paper's widths and parameter counts."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from dnc.models import (
    create_model,
    divide_dropout,
    divide_weight_decay,
    get_spec,
    member_config,
    registry,
    split_width,
)
from dnc.models.registry import get_family, list_families

FAMILIES = list_families()


def _cifar100_params(name: str, width: float | None = None) -> int:
    """Parameter count on CIFAR-100, built on the meta device so it allocates nothing."""
    with torch.device("meta"):
        model = create_model(name, num_classes=100, in_chans=3, image_size=32, width=width)
    return sum(p.numel() for p in model.parameters())


def _divided_total(name: str, split: int) -> int:
    width = split_width(name, get_spec(name).default_width, split)
    return split * _cifar100_params(name, width)


@pytest.mark.parametrize(
    ("name", "millions"),
    [
        ("wide_resnet28_10", 36.5),
        ("wide_resnet16_8", 11.0),
        ("wide_resnet40_10", 55.9),
        ("bottleneck_resnet110", 1.17),
        ("bottleneck_resnet164", 1.73),
        ("resnext29_8x64d", 34.5),
    ],
)
def test_undivided_sizes_match_paper(name: str, millions: float) -> None:
    assert _cifar100_params(name) / 1e6 == pytest.approx(millions, rel=0.01)


def test_wrn28_10_divided_in_four_keeps_the_budget() -> None:
    assert _divided_total("wide_resnet28_10", 4) == pytest.approx(
        _cifar100_params("wide_resnet28_10"), rel=0.02
    )


@pytest.mark.parametrize(
    ("name", "widths"),
    [
        ("wide_resnet28_10", {1: 10, 2: 7, 4: 5}),
        ("wide_resnet16_8", {1: 8, 2: 6, 4: 4}),
        ("bottleneck_resnet110", {1: 16, 2: 12, 4: 8, 8: 6, 16: 4}),
        ("resnext29_8x64d", {1: 8, 2: 4, 4: 2, 8: 1, 16: 1}),
        ("small_cnn", {1: 32, 2: 23, 4: 16, 8: 11}),
    ],
)
def test_member_widths_follow_paper_table(name: str, widths: dict[int, int]) -> None:
    default = get_spec(name).default_width
    assert {s: split_width(name, default, s) for s in widths} == widths


def test_family_name_works_like_model_name() -> None:
    assert split_width("wide_resnet", 10, 2) == split_width("wide_resnet28_10", 10, 2) == 7
    assert split_width("resnet_cifar", 16, 8) == 6


@pytest.mark.parametrize(
    "name", ["wide_resnet28_10", "bottleneck_resnet110", "resnext29_8x64d", "small_cnn"]
)
@pytest.mark.parametrize("width", [7.5, 10.0, 24.3])
def test_split_one_returns_width_exactly(name: str, width: float) -> None:
    assert split_width(name, width, 1) == width


def test_every_family_registered_its_rule() -> None:
    # One family per model module, each registering its own divide rule.
    assert set(FAMILIES) == {"pyramidnet", "resnet_cifar", "resnext", "small_cnn", "wide_resnet"}
    for family in FAMILIES:
        assert get_family(family).split_width(16.0, 4) < 16.0


def test_weight_decay_rules() -> None:
    assert divide_weight_decay(5e-4, 4, "none") == 5e-4
    assert divide_weight_decay(1.0, 2, "exp") == pytest.approx(0.607, abs=5e-4)
    assert divide_weight_decay(1.0, 4, "exp") == pytest.approx(0.472, abs=5e-4)
    assert divide_weight_decay(5e-4, 1, "exp") == 5e-4
    assert divide_weight_decay(5e-4, 4, "linear") == pytest.approx(1.25e-4)
    with pytest.raises(ValueError, match="unknown weight-decay rule"):
        divide_weight_decay(5e-4, 2, "cubic")


@pytest.mark.parametrize("family", [f for f in FAMILIES if get_family(f).dropout_rule == "linear"])
def test_dropout_divides_linearly(family: str) -> None:
    assert divide_dropout(family, 0.4, 4) == pytest.approx(0.1)
    assert divide_dropout(family, 0.4, 1) == 0.4


def test_sqrt_dropout_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    sqrt = replace(get_family("small_cnn"), dropout_rule="sqrt")
    monkeypatch.setitem(registry._FAMILIES, "small_cnn", sqrt)
    assert divide_dropout("small_cnn", 0.4, 4) == pytest.approx(0.2)
    assert divide_dropout("small_cnn", 0.4, 2) == pytest.approx(0.4 / math.sqrt(2))


def test_member_config() -> None:
    assert member_config("wide_resnet28_10", None, 0.3, 2) == {
        "width": 7,
        "dropout": pytest.approx(0.15),
    }
    assert member_config("small_cnn", 48, 0.3, 4, divide_dropout_flag=False) == {
        "width": 24,
        "dropout": 0.3,
    }
    assert member_config("resnext29_8x64d", None, 0.0, 1) == {"width": 8, "dropout": 0.0}


@pytest.mark.parametrize("split", [0, -2, 1.5, True])
def test_invalid_split_rejected(split: object) -> None:
    with pytest.raises(ValueError, match="split must be an integer"):
        split_width("small_cnn", 32, split)  # type: ignore[arg-type]


def test_unknown_name_rejected() -> None:
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        split_width("nope", 32, 2)
