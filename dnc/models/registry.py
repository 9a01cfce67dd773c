"""Model registry: families register their divide rule, variants register by name.

A family is one module under `dnc/models/`; it calls `register_family(...)` once with its
divide rule, then decorates one small builder per variant with `@register_model`. The
family is the module's name (as timm infers it), so adding a family is adding one file.
Each variant is built once (at width 1) at registration and checked against the
Backbone contract the methods rely on. Configs only ever name a variant (`wide_resnet28_10`).

A variant has a style: `preact` (dnc's own models, the default) or `reference` (the
SplitNet reference code's function, `dnc/models/reference_resnet.py`, PyramidNet). A
reference variant may be the twin of a preact one (`twin_of`), which is how
`model.style: reference` turns `wide_resnet28_10` into `wide_resnet28_10_ref`.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import nn

Builder = Callable[..., nn.Module]
WidthRule = Callable[[float, int], float]
Style = Literal["preact", "reference"]
STYLES: tuple[Style, ...] = ("preact", "reference")


@dataclass(frozen=True)
class Family:
    """A model family and its divide rule."""

    name: str
    # (undivided width, S) -> member width, for S >= 2.
    split_width: WidthRule
    # How head dropout divides: "linear" = p / S (ResNet/WRN reference code), "sqrt" =
    # p / sqrt(S) (the paper's rule for SENet/EfficientNet-style blocks and drop-path).
    dropout_rule: Literal["linear", "sqrt"]


@dataclass(frozen=True)
class ModelSpec:
    """A registered variant: its family, default width and paper weight decay."""

    name: str
    family: str
    # The family's width argument: WRN widen factor k, ResNet base width, ResNeXt
    # cardinality, CNN base channels. This is the argument the divide rule shrinks.
    default_width: float
    base_weight_decay: float  # the paper's undivided weight decay for this variant
    # builder(num_classes=, in_chans=, image_size=, width=, dropout=) -> nn.Module
    builder: Builder
    description: str
    style: Style = "preact"
    # Undivided head dropout when `model.dropout` is null (WRN-40-10 reference: 0.1).
    default_dropout: float = 0.0


_FAMILIES: dict[str, Family] = {}
_REGISTRY: dict[str, ModelSpec] = {}
_ALIASES: dict[str, str] = {}  # deprecated name -> current name
# Preact variant -> its reference-style twin (same family, width and paper weight decay).
REFERENCE_NAMES: dict[str, str] = {}


def _caller_module() -> str:
    return sys._getframe(2).f_globals.get("__name__", "__main__")  # register_family's caller


def family_of_module(module: str) -> str:
    """The family a module registers: its last dotted component (`dnc.models.resnext`)."""
    return module.rsplit(".", 1)[-1]


def register_family(
    split_width: WidthRule,
    dropout_rule: Literal["linear", "sqrt"] = "linear",
    name: str | None = None,
) -> Family:
    """Register the calling module's family (or `name`) with its divide rule."""
    if dropout_rule not in ("linear", "sqrt"):
        raise ValueError(f"dropout_rule must be 'linear' or 'sqrt', got {dropout_rule!r}")
    family = Family(name or family_of_module(_caller_module()), split_width, dropout_rule)
    if family.name in _FAMILIES:
        raise ValueError(f"family {family.name!r} is already registered")
    _FAMILIES[family.name] = family
    return family


def list_families() -> list[str]:
    """Names of all registered families, sorted."""
    return sorted(_FAMILIES)


def get_family(name: str) -> Family:
    """The family registered as `name`; ValueError listing the choices otherwise."""
    try:
        return _FAMILIES[name]
    except KeyError:
        choices = ", ".join(list_families())
        raise ValueError(f"unknown family {name!r}; choose one of: {choices}") from None


def check_backbone(model: nn.Module, name: str) -> None:
    """The contract every method relies on; TypeError naming what `name` lacks.

    `stem` then `blocks` (an nn.Sequential whose blocks each say `skippable`), then a
    `head` whose `fc` is the nn.Linear classifier, and `input_size` (C, H, W).
    """
    problems = []
    if not isinstance(getattr(model, "stem", None), nn.Module):
        problems.append("a `stem` module")
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Sequential) or len(blocks) == 0:
        problems.append("a non-empty nn.Sequential `blocks`")
    elif not all(isinstance(getattr(b, "skippable", None), bool) for b in blocks):
        problems.append("a boolean `skippable` on every block")
    if not isinstance(getattr(getattr(model, "head", None), "fc", None), nn.Linear):
        problems.append("`head.fc`, an nn.Linear")
    size = getattr(model, "input_size", None)
    if not (isinstance(size, tuple) and len(size) == 3):
        problems.append("`input_size` = (C, H, W)")
    if problems:
        raise TypeError(
            f"model {name!r} breaks the Backbone contract: needs {', '.join(problems)}"
        )


def tiny_instance(builder: Builder) -> nn.Module:
    """`builder` at width 1 on 8x8 single-channel inputs: the same module layout as any
    width, built in milliseconds (a meta-device context would import torch's compiler
    stack, ~2 s per process)."""
    return builder(num_classes=2, in_chans=1, image_size=8, width=1.0, dropout=0.0)


def register_model(
    name: str,
    default_width: float,
    base_weight_decay: float,
    description: str,
    family: str | None = None,
    *,
    style: Style = "preact",
    twin_of: str | None = None,
    default_dropout: float = 0.0,
) -> Callable[[Builder], Builder]:
    """Decorator registering `builder` as variant `name` of its module's family.

    The family (default: the builder's module name) must be registered first; a variant
    registered outside dnc is built once, tiny, and must satisfy the Backbone contract.
    `twin_of` names the preact variant a reference-style one replaces under
    `model.style: reference`.
    """
    if default_width <= 0:
        raise ValueError(f"default_width must be positive, got {default_width}")
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    if twin_of is not None and (style != "reference" or get_spec(twin_of).style != "preact"):
        raise ValueError(f"{name!r}: twin_of needs a reference variant of a preact one")

    def decorate(builder: Builder) -> Builder:
        fam = get_family(family or family_of_module(builder.__module__)).name
        if name in _REGISTRY or name in _ALIASES:
            raise ValueError(f"model {name!r} is already registered")
        spec = ModelSpec(
            name,
            fam,
            float(default_width),
            base_weight_decay,
            builder,
            description,
            style=style,
            default_dropout=default_dropout,
        )
        if not builder.__module__.startswith("dnc."):
            # A plugin's variant is built once, tiny, and checked here. dnc's own ~30 are
            # checked by tests/test_models.py instead: building them all on import cost
            # every process that imports dnc.models ~1 s (construction and init).
            check_backbone(tiny_instance(builder), name)
        _REGISTRY[name] = spec
        if twin_of is not None:
            REFERENCE_NAMES[twin_of] = name
        return builder

    return decorate


def register_alias(old: str, new: str) -> None:
    """Keep `old` working as a deprecated name of the registered variant `new`."""
    get_spec(new)
    if old in _REGISTRY or old in _ALIASES:
        raise ValueError(f"model {old!r} is already registered")
    _ALIASES[old] = new


def list_models() -> list[str]:
    """Names of all registered variants (not the deprecated aliases), sorted."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The spec registered under `name`; ValueError listing the choices otherwise.

    A deprecated alias warns (DeprecationWarning) and returns its new variant's spec.
    """
    if name in _ALIASES:
        new = _ALIASES[name]
        warnings.warn(
            f"model {name!r} is deprecated; it is {new!r} (a bottleneck net)",
            DeprecationWarning,
            stacklevel=2,
        )
        name = new
    try:
        return _REGISTRY[name]
    except KeyError:
        choices = ", ".join(list_models())
        raise ValueError(f"unknown model {name!r}; choose one of: {choices}") from None


def styled_name(name: str, style: Style) -> str:
    """The variant `name` is in `style`: itself, or its reference twin; ValueError otherwise.

    `reference` maps a preact variant to its `_ref` twin and keeps a reference variant;
    `preact` keeps a preact variant and refuses a reference-only one (PyramidNet, `*_ref`).
    """
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose one of: {', '.join(STYLES)}")
    spec = get_spec(name)
    if spec.style == style:
        return spec.name
    if style == "reference" and spec.name in REFERENCE_NAMES:
        return REFERENCE_NAMES[spec.name]
    if style == "reference":
        twins = ", ".join(sorted(REFERENCE_NAMES))
        raise ValueError(
            f"{name!r} has no reference-style twin (those with one: {twins}); use style preact"
        )
    raise ValueError(f"{name!r} exists only in style reference")


def create_model(
    name: str,
    *,
    num_classes: int,
    in_chans: int,
    image_size: int,
    width: float | None = None,
    dropout: float | None = 0.0,
    style: Style | None = None,
) -> nn.Module:
    """Build variant `name` for a dataset; `width=None` means the variant's default width.

    `width` and `dropout` are taken as given (`dropout=None`: the variant's default): divide
    them first (`member_config`) when building a member of a split network. `style`, when
    given, builds `styled_name(name, style)` (e.g. the reference twin) instead of `name`.
    """
    spec = get_spec(name if style is None else styled_name(name, style))
    if width is not None and width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    return spec.builder(
        num_classes=num_classes,
        in_chans=in_chans,
        image_size=image_size,
        width=spec.default_width if width is None else width,
        dropout=spec.default_dropout if dropout is None else dropout,
    )
