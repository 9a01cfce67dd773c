"""Cooperative learning: depth sub-networks, the distillation loss, budgets, the stages."""

import copy
from dataclasses import replace

import pytest
import torch

from dnc import stages
from dnc.config import ConfigError
from dnc.data import get_dataset_info
from dnc.evaluation.depth import FULL, resolve_plans, select_depth
from dnc.methods import get_method
from dnc.methods.cooperative import CooperativeTask
from dnc.methods.cooperative_net import CooperativeNet, build_cooperative, depth_costs
from dnc.models import create_model
from dnc.train import checkpoint
from dnc.train.losses import distillation_kl

DIGITS = {"num_classes": 10, "in_chans": 1, "image_size": 8}


# One epoch on a few hundred digits: enough to run every part of the method.
SMALL = {
    "train.epochs": 1,
    "data.train_size": 384,
    "data.test_size": 128,
    "eval.latency_batch_sizes": [1],
    "eval.latency_repeats": 1,
}


@pytest.fixture()
def coop_params(tiny_params):
    return tiny_params.with_overrides({"method": "cooperative", **SMALL})


def build(params, name="small_cnn", width=8, **overrides):
    cfg = params.cooperative.model_copy(update=overrides)
    torch.manual_seed(0)
    return build_cooperative(name, cfg, width=width, **DIGITS)


def test_trains_and_evaluates_through_the_stages(coop_params, tmp_path):
    result = stages.train(coop_params, None, tmp_path / "run")
    last = result.state.history[-1]
    for key in ("train/ce", "train/ce_sub", "train/kd_sub", "train/kd_peer", "train/kd_leader"):
        assert key in last and last[key] >= 0, key
    assert "val/member_5/acc" in last  # 2 Teammates x (d1, d2, full)
    metrics = stages.evaluate(coop_params, None, tmp_path / "run", tmp_path / "m.json")
    assert [d["name"] for d in metrics["depths"]] == ["d1", "d2", FULL]
    assert [row["label"] for row in metrics["curve"]] == ["depth d1", "depth d2", "depth full"]
    assert all(set(row) >= {"label", "macs", "params", "acc"} for row in metrics["curve"])
    assert metrics["members"][0]["name"] == "A:d1" and len(metrics["members"]) == 6
    assert metrics["config"]["split_factor"] is None
    assert 0 <= metrics["leader"]["acc"] <= 100 and metrics["deploy"]["name"] == FULL
    # best.pt holds Teammates, Leader and the per-depth BatchNorm statistics.
    keys = checkpoint.load(tmp_path / "run" / checkpoint.BEST)["model_state"].keys()
    assert any(k.startswith("depth_stats.A_d1.") for k in keys)


@pytest.mark.parametrize("name", ["small_cnn", "bottleneck_resnet20", "wide_resnet16_2"])
def test_subnetworks_share_weights_and_get_cheaper(coop_params, name):
    net = build(coop_params, name, width=None, depths={"shallow": "first:0"})
    teammate = net.teammates[0]
    owned = {p.data_ptr() for p in teammate.parameters()}
    for depth in net.plans:
        sub = net.subnetwork(0, depth)
        assert {p.data_ptr() for p in sub.parameters()} <= owned
        for block, i in zip(sub.blocks, net.plans[depth], strict=True):
            assert block is teammate.blocks[i]
    macs = [row["macs"] for row in depth_costs(net)]
    params = [row["params"] for row in depth_costs(net)]
    assert macs == sorted(macs) and len(set(macs)) == len(macs)
    assert params[-1] == sum(p.numel() for p in teammate.parameters())
    # A sub-network's loss reaches the Teammate's own weights.
    net.subnetwork(0, "shallow")(torch.randn(4, 1, 8, 8)).sum().backward()
    last_kept = teammate.blocks[net.plans["shallow"][-1]]
    assert all(p.grad is not None for p in last_kept.parameters())


def test_first_k_rule_keeps_shape_changing_blocks():
    cnn = create_model("small_cnn", width=4, **DIGITS)  # R, T, R, T, R
    resnet = create_model(
        "bottleneck_resnet20", width=4, **DIGITS
    )  # B(proj) B B(proj) B B(proj) B
    assert resolve_plans(cnn.blocks, {"d": "first:0"}, "k")["d"] == (1, 3)
    assert resolve_plans(resnet.blocks, {"d": "first:0"}, "k")["d"] == (0, 2, 4)
    assert list(resolve_plans(cnn.blocks, {"b": [1, 2, 3], "a": [1, 3]}, "k")) == [
        "a",
        "b",
        FULL,
    ]


def test_kd_terms_are_zero_when_teacher_is_student(coop_params):
    z = torch.randn(16, 10)
    assert distillation_kl(z, z, 4.0).item() == 0.0
    assert distillation_kl(z, z.flip(0), 4.0).item() > 0
    torch.manual_seed(0)
    mate = create_model("small_cnn", width=4, **DIGITS)
    everything = tuple(range(len(mate.blocks)))
    net = CooperativeNet(
        [mate, copy.deepcopy(mate)],
        copy.deepcopy(mate),
        {"same": everything, FULL: everything},
        bn_stats="shared",
    )
    for peers in ("same_depth", "all"):
        cfg = coop_params.cooperative.model_copy(update={"peers": peers})
        parts = CooperativeTask(net, cfg).training_step(
            torch.randn(1, 8, 1, 8, 8), torch.arange(8), 0.0
        )
        for key in ("kd_sub", "kd_peer", "kd_leader"):
            assert parts[key].item() == 0.0, (peers, key)
        assert parts["ce"].item() > 0


def test_per_depth_statistics_leave_the_shared_ones_alone(coop_params):
    net = build(coop_params)
    bn = net.teammates[0].blocks[1][1]  # the first transition's BatchNorm
    own = bn.running_mean
    net.train()
    net.team_logits(0, torch.randn(8, 1, 8, 8) * 3 + 1)
    assert bn.running_mean is own  # the buffers are swapped back after each depth
    private = net.depth_stats["A_d1"]
    assert not torch.equal(private.mean_0, torch.zeros_like(private.mean_0))
    shared = build(coop_params, bn_stats="shared")
    assert len(shared.depth_stats) == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cooperative.depths.d1": [1, 3, 9]}, r"^cooperative\.depths\.d1: block 9 does not"),
        ({"cooperative.depths.d1": [0, 1]}, r"^cooperative\.depths\.d1: must keep block 3"),
        ({"cooperative.depths.d1": "first:1"}, r"^cooperative\.depths\.d1: keeps every block"),
        ({"cooperative.depths.d2": [1, 3]}, r"^cooperative\.depths\.d2: keeps the same"),
        ({"cooperative.budget_macs": 10}, r"^cooperative\.budget_macs: no depth fits"),
    ],
)
def test_bad_depths_fail_at_stage_start(coop_params, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        stages.train(coop_params.with_overrides(overrides), None, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("value", "message"),
    [("first", r"cooperative\.depths\.d1: .*first:K"), ([-1], r"cooperative\.depths\.d1: ")],
)
def test_bad_depth_specs_fail_at_load(coop_params, value, message):
    with pytest.raises(ConfigError, match=message):
        coop_params.with_overrides({"cooperative.depths.d1": value})


def test_budget_selects_the_deepest_fitting_depth(coop_params):
    rows = [{"name": "a", "macs": 10}, {"name": "b", "macs": 30}, {"name": "c", "macs": 50}]
    assert select_depth(rows, 30)["name"] == "b"
    assert select_depth(rows, 1000)["name"] == "c"
    with pytest.raises(ValueError, match="cheapest, 'a', needs 10"):
        select_depth(rows, 9)
    from dnc.methods.cooperative import build_cooperative_model

    costs = {row["name"]: row["macs"] for row in depth_costs(build(coop_params))}
    params = coop_params.with_overrides({"cooperative.budget_macs": costs["d2"] + 1})
    net = build_cooperative_model(params, replace(get_dataset_info("digits"), **DIGITS))
    assert net.deploy == "d2"
    assert net.predict(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_info_lists_depths(coop_params):
    info = get_method("cooperative").info(coop_params, get_dataset_info("digits"))["cooperative"]
    assert [(d["name"], d["kept"]) for d in info["depths"]] == [
        ("d1", [1, 3]),
        ("d2", [1, 2, 3, 4]),
        (FULL, [0, 1, 2, 3, 4]),
    ]
    assert info["leader"]["macs"] > info["depths"][-1]["macs"]
