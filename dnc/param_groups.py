"""Optimiser parameter groups: which tensors weight decay applies to.

The SplitNet reference code (`utils/lr_scheduler.get_parameter_groups`) exempts every
parameter whose name contains "bias" or "norm". Its CIFAR models name their BatchNorms
`bn1`, `layer0.1`, `downsample.2`, ..., never "norm", so in effect only the biases (BN shifts
and the classifier bias) go undecayed while BN scales still decay. `exempt="bias"` is that
rule, stated by module type so dnc's own names (`head.norm`, `stem.1`) cannot change it;
`exempt="norm_bias"` also spares the BN scales (the common timm/"bag of tricks" choice).
"""

from __future__ import annotations

from typing import Literal

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

Exempt = Literal["none", "bias", "norm_bias"]
NORM_TYPES = (_BatchNorm, nn.GroupNorm, nn.LayerNorm)


def decay_groups(model: nn.Module, weight_decay: float, exempt: Exempt = "none") -> list[dict]:
    """[{"params": decayed, "weight_decay": wd}, {"params": exempt ones, "weight_decay": 0}].

    `none` decays everything (one group, today's behaviour); `bias` exempts every bias;
    `norm_bias` exempts biases and every normalisation layer's parameters. Parameter order
    follows `model.named_parameters()` within each group; frozen parameters are left out.
    """
    if exempt not in ("none", "bias", "norm_bias"):
        raise ValueError(f"unknown weight-decay exemption {exempt!r}; use none, bias, norm_bias")
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            spared = exempt != "none" and (
                name == "bias" or (exempt == "norm_bias" and isinstance(module, NORM_TYPES))
            )
            (no_decay if spared else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if exempt != "none":
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups
