"""The divide rule: shrink one network's width and regularisation into S members.

The paper (SplitNet, arXiv 2011.14660) keeps the total cost of S members close to the one
network's by dividing width so parameters fall by about 1/S per member. The exact integer
rule differs per family: each family module registers its own (`register_family`).
Stems, shortcuts and heads may stay wide, so S > 1 totals can be slightly above the S = 1 count.
"""

from __future__ import annotations

import math

from dnc.models.registry import Family, get_family, get_spec, list_families


def _check_split(split: int) -> None:
    if isinstance(split, bool) or int(split) != split or split < 1:
        raise ValueError(f"split must be an integer >= 1, got {split!r}")


WEIGHT_DECAY_RULES = ("none", "exp", "linear")


def _family(name_or_family: str) -> Family:
    """The family of that name, or the family of a registered model name."""
    if name_or_family in list_families():
        return get_family(name_or_family)
    return get_family(get_spec(name_or_family).family)


def split_width(name_or_family: str, width: float, split: int) -> float:
    """Member width when a model (or family) of width `width` is divided into `split` parts.

    `split=1` returns `width` unchanged, so fractional widths survive the undivided case.
    """
    _check_split(split)
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    if split == 1:
        return width
    return _family(name_or_family).split_width(width, split)


def divide_dropout(family: str, p: float, split: int) -> float:
    """Member dropout: p / S or p / sqrt(S), as the family registered (`dropout_rule`).

    `family` may also be a registered model name.
    """
    _check_split(split)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {p}")
    rule = _family(family).dropout_rule
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
    dropout: float | None,
    split: int,
    divide_dropout_flag: bool = True,
) -> dict[str, float]:
    """Width and head dropout of one member of model `name` divided into `split` parts.

    `width=None` / `dropout=None` start from the variant's defaults. Returns {"width",
    "dropout"}, ready to pass to `create_model`.
    """
    spec = get_spec(name)
    base_width = spec.default_width if width is None else width
    dropout = spec.default_dropout if dropout is None else dropout
    member_dropout = divide_dropout(name, dropout, split) if divide_dropout_flag else dropout
    return {"width": split_width(name, base_width, split), "dropout": member_dropout}
