"""The divide rule: shrink one network's width and regularisation into S members.

The paper (SplitNet, arXiv 2011.14660) keeps the total cost of S members close to the one
network's by dividing width so parameters fall by about 1/S per member. The exact integer
rule differs per family (see `split_width`); stems, shortcuts and heads may stay wide, so
S > 1 totals can be slightly above the S = 1 count.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from dnc.models.layers import round_channels
from dnc.models.pyramidnet import pyramid_alpha
from dnc.models.registry import FAMILIES, get_spec


def _check_split(split: int) -> None:
    if isinstance(split, bool) or int(split) != split or split < 1:
        raise ValueError(f"split must be an integer >= 1, got {split!r}")


def _wrn_widen_factor(k: float, split: int) -> float:
    # Reference rule: int(max(k / sqrt(S) + 0.4, 1)); WRN-28-10 -> 10 / 7 / 5 for S = 1 / 2 / 4.
    return float(int(max(k / math.sqrt(split) + 0.4, 1.0)))


def _resnet_base_width(width: float, split: int) -> float:
    # Nearest even number to w / sqrt(S) reproduces the paper's 16 -> 12 / 8 / 6 / 4 for
    # S = 2 / 4 / 8 / 16 (plain rounding gives 11 at S = 2; ceil also fits but biases up).
    return float(max(1, 2 * math.floor(width / (2 * math.sqrt(split)) + 0.5)))


def _resnext_cardinality(cardinality: float, split: int) -> float:
    # Cardinality divides linearly: each group keeps its width, so members have C / S groups.
    return float(round_channels(cardinality / split))


def _cnn_channels(width: float, split: int) -> float:
    # Parameters scale with width^2, so w / sqrt(S) gives each member about 1/S of them.
    return float(round_channels(width / math.sqrt(split)))


WIDTH_RULES: dict[str, Callable[[float, int], float]] = {
    "wide_resnet": _wrn_widen_factor,
    "resnet_cifar": _resnet_base_width,
    "resnext": _resnext_cardinality,
    "small_cnn": _cnn_channels,
    "pyramidnet": pyramid_alpha,  # widening alpha / sqrt(S), unrounded (reference)
}

# How head dropout divides: "linear" = p / S (ResNet/WRN reference code), "sqrt" = p / sqrt(S)
# (the paper's rule for SENet/EfficientNet-style blocks, drop-path and ShakeDrop).
DROPOUT_RULES: dict[str, str] = {
    "wide_resnet": "linear",
    "resnet_cifar": "linear",
    "resnext": "linear",
    "small_cnn": "linear",
    "pyramidnet": "sqrt",  # dropout = ShakeDrop final p: 0.5 / sqrt(S) (reference)
}

WEIGHT_DECAY_RULES = ("none", "exp", "linear")


def _family(name_or_family: str) -> str:
    """A family name as given, or the family of a registered model name."""
    if name_or_family in FAMILIES:
        return name_or_family
    return get_spec(name_or_family).family


def split_width(name_or_family: str, width: float, split: int) -> float:
    """Member width when a model (or family) of width `width` is divided into `split` parts.

    `split=1` returns `width` unchanged, so fractional widths survive the undivided case.
    """
    _check_split(split)
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    if split == 1:
        return width
    return WIDTH_RULES[_family(name_or_family)](width, split)


def divide_dropout(family: str, p: float, split: int) -> float:
    """Member dropout: p / S for the ResNet-style families here, p / sqrt(S) where tabled so.

    `family` may also be a registered model name.
    """
    _check_split(split)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {p}")
    rule = DROPOUT_RULES[_family(family)]
    return p / split if rule == "linear" else p / math.sqrt(split)


def divide_weight_decay(wd: float, split: int, rule: str) -> float:
    """Member weight decay: "none" -> wd, "exp" -> wd * exp(1/S - 1), "linear" -> wd / S."""
    _check_split(split)
    if rule == "none":
        return wd
    if rule == "exp":
        return wd * math.exp(1.0 / split - 1.0)
    if rule == "linear":
        return wd / split
    raise ValueError(f"unknown weight-decay rule {rule!r}; choose one of: none, exp, linear")


def member_config(
    name: str,
    width: float | None,
    dropout: float,
    split: int,
    divide_dropout_flag: bool = True,
) -> dict[str, float]:
    """Width and head dropout of one member of model `name` divided into `split` parts.

    `width=None` starts from the variant's default width. Returns {"width", "dropout"},
    ready to pass to `create_model`.
    """
    base_width = get_spec(name).default_width if width is None else width
    member_dropout = divide_dropout(name, dropout, split) if divide_dropout_flag else dropout
    return {"width": split_width(name, base_width, split), "dropout": member_dropout}
