"""Model registry, the model families and the paper's divide rule.

Importing this package registers every family (one module each, with its divide rule) and
every variant; build one with `create_model(name, ...)`.
"""

from dnc.models import (  # noqa: F401  (registers)
    pyramidnet,
    reference_resnet,
    resnet_cifar,
    resnext,
    small_cnn,
    wide_resnet,
)
from dnc.models.divide import divide_dropout, divide_weight_decay, member_config, split_width
from dnc.models.registry import (
    REFERENCE_NAMES,
    STYLES,
    Family,
    ModelSpec,
    check_backbone,
    create_model,
    get_family,
    get_spec,
    list_families,
    list_models,
    register_alias,
    register_family,
    register_model,
    styled_name,
)

__all__ = [
    "Family",
    "ModelSpec",
    "REFERENCE_NAMES",
    "STYLES",
    "check_backbone",
    "create_model",
    "divide_dropout",
    "divide_weight_decay",
    "get_family",
    "get_spec",
    "list_families",
    "list_models",
    "member_config",
    "register_alias",
    "register_family",
    "register_model",
    "split_width",
    "styled_name",
]
