"""Model registry, the four model families and the paper's divide rule.

Importing this package registers every variant; build one with `create_model(name, ...)`.
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
    FAMILIES,
    ModelSpec,
    create_model,
    get_spec,
    list_models,
    register_model,
)

__all__ = [
    "FAMILIES",
    "ModelSpec",
    "create_model",
    "divide_dropout",
    "divide_weight_decay",
    "get_spec",
    "list_models",
    "member_config",
    "register_model",
    "split_width",
]
