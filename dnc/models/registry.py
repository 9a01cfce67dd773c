"""Model registry: variants are registered by name and built through `create_model`.

Each family module decorates one small builder per variant with `@register_model`; the
variant name encodes its shape (`wide_resnet28_10`), so configs only ever name a model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

FAMILIES = ("small_cnn", "wide_resnet", "resnet_cifar", "resnext", "pyramidnet")

Builder = Callable[..., nn.Module]


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


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    family: str,
    default_width: float,
    base_weight_decay: float,
    description: str,
) -> Callable[[Builder], Builder]:
    """Decorator registering `builder` under `name`; a duplicate name is an error."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of: {', '.join(FAMILIES)}")
    if default_width <= 0:
        raise ValueError(f"default_width must be positive, got {default_width}")

    def decorate(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelSpec(
            name=name,
            family=family,
            default_width=float(default_width),
            base_weight_decay=base_weight_decay,
            builder=builder,
            description=description,
        )
        return builder

    return decorate


def list_models() -> list[str]:
    """Names of all registered variants, sorted."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The spec registered under `name`; ValueError listing the choices otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        choices = ", ".join(list_models())
        raise ValueError(f"unknown model {name!r}; choose one of: {choices}") from None


def create_model(
    name: str,
    *,
    num_classes: int,
    in_chans: int,
    image_size: int,
    width: float | None = None,
    dropout: float = 0.0,
) -> nn.Module:
    """Build variant `name` for a dataset; `width=None` means the variant's default width.

    `width` and `dropout` are taken as given: divide them first (`member_config`) when
    building a member of a split network.
    """
    spec = get_spec(name)
    if width is not None and width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    return spec.builder(
        num_classes=num_classes,
        in_chans=in_chans,
        image_size=image_size,
        width=spec.default_width if width is None else width,
        dropout=dropout,
    )
