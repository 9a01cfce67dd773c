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


def exempt_parameters(model: nn.Module, exempt: Exempt) -> set[int]:
    """ids of the parameters of `model` that `exempt` spares weight decay.

    `none` spares nothing; `bias` every bias; `norm_bias` biases and every normalisation
    layer's parameters.
    """
    if exempt not in ("none", "bias", "norm_bias"):
        raise ValueError(f"unknown weight-decay exemption {exempt!r}; use none, bias, norm_bias")
    spared: set[int] = set()
    if exempt == "none":
        return spared
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if name == "bias" or (exempt == "norm_bias" and isinstance(module, NORM_TYPES)):
                spared.add(id(param))
    return spared


def decay_groups(model: nn.Module, weight_decay: float, exempt: Exempt = "none") -> list[dict]:
    """[{"params": decayed, "weight_decay": wd}, {"params": exempt ones, "weight_decay": 0}].

    `none` decays everything (one group, today's behaviour). Parameter order follows
    `model.named_parameters()` within each group; frozen parameters are left out.
    """
    spared = exempt_parameters(model, exempt)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) not in spared], "weight_decay": weight_decay}]
    if exempt != "none":
        groups.append({"params": [p for p in params if id(p) in spared], "weight_decay": 0.0})
    return groups


def exempt_groups(model: nn.Module, groups: list[dict], exempt: Exempt) -> list[dict]:
    """A method's optimiser `groups` with the exempt parameters of every decayed group moved
    to a twin group without weight decay (empty groups dropped); `none` returns `groups`."""
    spared = exempt_parameters(model, exempt)
    if not spared:
        return groups
    out: list[dict] = []
    for group in groups:
        params = list(group["params"])
        keep = [p for p in params if id(p) not in spared or group["weight_decay"] == 0]
        moved = [p for p in params if id(p) in spared and group["weight_decay"] != 0]
        out += [{**group, "params": keep}] if keep else []
        out += [{**group, "params": moved, "weight_decay": 0.0}] if moved else []
    return out
