"""Parameter and FLOP accounting with `torch.utils.flop_counter`.

`FlopCounterMode` counts 2 FLOPs per multiply-add. The paper's "FLOPs" are multiply-adds
(MACs) summed over members, so dnc reports `macs` (= counted FLOPs / 2) as the headline
figure and keeps the raw `flops` beside it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(module: nn.Module) -> int:
    """Number of parameters (works on meta-device modules)."""
    return sum(p.numel() for p in module.parameters())


def count_flops(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass on an input of `input_shape` (batch included).

    Runs on the module's own device; build the module under `torch.device("meta")` to
    count a large model in milliseconds without allocating its weights.
    """
    param = next(module.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(torch.zeros(input_shape, device=device))
    finally:
        module.train(was_training)
    return int(counter.get_total_flops())


def cost(module: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """{"params", "flops", "macs"} for one image (input_shape without the batch dim)."""
    flops = count_flops(module, (1, *input_shape))
    return {"params": count_params(module), "flops": flops, "macs": flops // 2}


_COUNTED: dict[tuple, dict[str, int]] = {}


def cached_cost(module: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """`cost`, counted once per architecture per process (the key is the module's repr, which
    names every layer's shape, and its parameters' shapes): a SplitNet's members are alike,
    and a search, planner or multi-seed stage costs the same members again and again."""
    shapes = tuple(tuple(p.shape) for p in module.parameters())
    key = (type(module).__qualname__, repr(module), shapes, tuple(input_shape))
    if key not in _COUNTED:
        _COUNTED[key] = cost(module, input_shape)
    return dict(_COUNTED[key])
