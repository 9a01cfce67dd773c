"""What `params.method` changes in the stages: the model, the task, the checks and `info`.

- splitnet: S co-trained members (`dnc.tasks.cotrain`), the model `stages.build_model` makes.
- cooperative: two Teammates with depth sub-networks and a Leader (`dnc.tasks.cooperative`).
- auxiliary: the same SplitNet, trained with a wide training-only path per member
  (`dnc.tasks.auxiliary`); its checkpoint, params and MACs are the SplitNet's alone.
`dnc.stages` calls these, so every entry point (CLI, DVC, Prefect, Optuna) gets all three.
"""

from __future__ import annotations

import torch
from torch import nn

from dnc.config import ConfigError, Params
from dnc.data import DatasetInfo
from dnc.depth import select_depth
from dnc.flops import cost, count_params
from dnc.models import create_model, member_config
from dnc.splitnet import SplitNet
from dnc.tasks import Task
from dnc.tasks.auxiliary import AuxiliaryTask, attach_points, build_auxiliary
from dnc.tasks.cooperative import (
    CooperativeNet,
    CooperativeTask,
    build_cooperative,
    depth_costs,
)


def build_cooperative_model(
    params: Params, num_classes: int, in_chans: int, image_size: int
) -> CooperativeNet:
    """The CooperativeNet of `params` (seeded), deploying the depth that fits the budget."""
    torch.manual_seed(params.seed)
    try:
        net = build_cooperative(
            params.model.name,
            params.cooperative,
            num_classes=num_classes,
            in_chans=in_chans,
            image_size=image_size,
            width=params.model.width,
            dropout=params.model.dropout,
            ensemble=params.split.ensemble,
        )
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if params.cooperative.budget_macs is not None:
        net.deploy = deploy_depth(net, params.cooperative.budget_macs)["name"]
    return net


def deploy_depth(net: CooperativeNet, budget_macs: int) -> dict:
    """The deepest depth within `budget_macs`; ConfigError when none is."""
    try:
        return dict(select_depth(depth_costs(net), budget_macs, "macs"))
    except ValueError as err:
        raise ConfigError(f"cooperative.budget_macs: {err}") from None


def check_method(params: Params, info: DatasetInfo) -> None:
    """Method keys that need the architecture (depths, budget, attach points).

    Builds on the meta device (no weights, milliseconds); raises ConfigError naming the key.
    """
    if params.method == "cooperative":
        with torch.device("meta"):
            build_cooperative_model(params, info.num_classes, info.in_chans, info.image_size)
    elif params.method == "auxiliary":  # always the loop: it reads every member's blocks
        with torch.device("meta"):
            member = _member(params, info)
        try:
            attach_points(len(member.blocks), params.auxiliary.attach, "auxiliary.attach")
        except ValueError as err:
            raise ConfigError(str(err)) from None


def _member(params: Params, info: DatasetInfo) -> nn.Module:
    cfg = member_config(
        params.model.name,
        params.model.width,
        params.model.dropout,
        params.split.factor,
        params.split.divide_dropout,
    )
    return create_model(
        params.model.name,
        num_classes=info.num_classes,
        in_chans=info.in_chans,
        image_size=info.image_size,
        width=cfg["width"],
        dropout=cfg["dropout"],
    )


def build_method_task(params: Params, model: nn.Module) -> Task:
    """The cooperative or auxiliary task around `model` (the inference model)."""
    t = params.train
    if params.method == "cooperative":
        return CooperativeTask(model, params.cooperative, t.mixup_alpha, t.label_smoothing)
    if params.method != "auxiliary" or not isinstance(model, SplitNet):
        raise ValueError(f"method {params.method!r} has no task for {type(model).__name__}")
    first = model.members[0]
    cfg = member_config(
        params.model.name,
        params.model.width,
        params.model.dropout,
        params.split.factor,
        params.split.divide_dropout,
    )
    auxiliary = build_auxiliary(
        model,
        params.model.name,
        cfg["width"],
        cfg["dropout"],
        params.auxiliary,
        num_classes=first.head.fc.out_features,
        in_chans=first.input_size[0],
        image_size=first.input_size[1],
    )
    return AuxiliaryTask(
        model,
        auxiliary,
        params.auxiliary,
        t.cot_weight,
        t.cot_warmup_epochs,
        t.mixup_alpha,
        t.label_smoothing,
    )


def method_info(params: Params, info: DatasetInfo) -> dict:
    """`dnc info` extras: cooperative depths (kept blocks, MACs) or the auxiliary overhead."""
    check_method(params, info)
    if params.method == "cooperative":
        with torch.device("meta"):
            net = build_cooperative_model(params, info.num_classes, info.in_chans, info.image_size)
            depths = depth_costs(net)
            leader = cost(net.leader, net.teammates[0].input_size)
        return {
            "cooperative": {
                "depths": depths,
                "leader": leader,
                "deploy": net.deploy,
                "budget_macs": params.cooperative.budget_macs,
                "training_params": count_params(net),
            }
        }
    if params.method == "auxiliary":
        with torch.device("meta"):
            compact = SplitNet([_member(params, info) for _ in range(params.split.factor)])
            task = build_method_task(params, compact)
        return {
            "auxiliary": {
                "compact_params": count_params(compact),
                "training_params": count_params(task),
                "auxiliary_params": count_params(task.auxiliary),
                "attach": params.auxiliary.attach,
            }
        }
    return {}
