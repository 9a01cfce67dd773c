"""Fused (packed) and multi-device execution are the loop SplitNet, computed differently."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from dnc import builders, stages
from dnc.ensemble.fused import FusedSplitNet, UnsupportedModuleError, execution_model
from dnc.ensemble.parallel import ParallelSplitNet, member_groups, parse_devices
from dnc.ensemble.splitnet import SplitNet, build_splitnet
from dnc.methods.splitnet import CoTrainingTask
from dnc.models import get_spec
from dnc.models.registry import list_families
from dnc.train import checkpoint

# The smallest variant of every family: (name, width, image size, channels).
TINY_VARIANTS = [
    ("small_cnn", 8, 20, 1),
    ("wide_resnet10_2", 1, 8, 3),
    ("bottleneck_resnet20", 8, 8, 3),
    ("basic_resnet20", 8, 8, 3),
    ("resnext11_4x4d", 4, 8, 3),
    ("pyramidnet20", 8, 8, 3),
]
BATCH = 4


def tiny_net(name: str, width: float, size: int, chans: int, split: int) -> SplitNet:
    torch.manual_seed(split)
    return build_splitnet(
        name, split=split, num_classes=5, in_chans=chans, image_size=size, width=width
    )


def views_for(net: SplitNet, split: int) -> torch.Tensor:
    param = next(net.parameters())
    return torch.randn(split, BATCH, *net.members[0].input_size, dtype=param.dtype)


def assert_close_tree(got: dict, want: dict, rtol: float) -> None:
    """Every tensor within `rtol` of its own scale (grads of different layers differ a lot)."""
    assert got.keys() == want.keys()
    for key, w in want.items():
        g, w = got[key].double(), w.double()
        scale = max(w.abs().max().item(), 1e-6)
        assert (g - w).abs().max().item() <= rtol * scale, key


def test_tiny_variants_cover_every_family():
    assert {get_spec(name).family for name, *_ in TINY_VARIANTS} == set(list_families())


@pytest.mark.parametrize("split", [2, 4])
@pytest.mark.parametrize("variant", TINY_VARIANTS, ids=[v[0] for v in TINY_VARIANTS])
def test_fused_matches_loop_outputs_gradients_and_step(variant, split):
    # float64: packing is exact arithmetic, so the two agree to ~1e-15 where float32's
    # rounding (amplified by BatchNorm over a 4-image batch) would blur a real mismatch.
    net = tiny_net(*variant, split).double()
    fused = FusedSplitNet.from_splitnet(net)
    tasks = [CoTrainingTask(m, cot_weight=0.5, cot_warmup_epochs=0) for m in (net, fused)]
    optims = [
        torch.optim.SGD(t.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
        for t in tasks
    ]
    views, targets = views_for(net, split), torch.randint(0, 5, (BATCH,))
    for step in range(2):  # the second step exercises the momentum buffers
        parts = [t.training_step(views, targets, epoch=1.0) for t in tasks]
        torch.testing.assert_close(parts[1]["loss"], parts[0]["loss"], rtol=1e-12, atol=0)
        for opt, p in zip(optims, parts, strict=True):
            opt.zero_grad()
            p["loss"].backward()
        if step == 0:
            grads = fused.member_tensors({n: p.grad for n, p in fused.packed.named_parameters()})
            assert_close_tree(grads, {n: p.grad for n, p in net.named_parameters()}, 1e-9)
        for opt in optims:
            opt.step()
    # weights and BatchNorm running stats after two optimiser steps
    assert_close_tree(fused.state_dict(), net.state_dict(), 1e-9)
    net.eval(), fused.eval()
    with torch.no_grad():
        torch.testing.assert_close(fused(views), net(views), rtol=1e-9, atol=1e-12)
        for k in range(1, split + 1):  # every k-of-S prefix, shared input
            torch.testing.assert_close(
                fused.predict(views[0], k), net.predict(views[0], k), rtol=1e-9, atol=1e-12
            )


@pytest.mark.parametrize("variant", TINY_VARIANTS, ids=[v[0] for v in TINY_VARIANTS])
def test_fused_matches_loop_in_float32(variant):
    net = tiny_net(*variant, 4)
    fused = FusedSplitNet.from_splitnet(net)
    views = views_for(net, 4)
    torch.testing.assert_close(fused(views), net(views), rtol=1e-4, atol=1e-5)


def test_checkpoints_load_both_ways(tmp_path):
    net = tiny_net("small_cnn", 8, 20, 1, 3)
    fused = FusedSplitNet.from_splitnet(net)
    assert list(fused.state_dict()) == list(net.state_dict())  # always the loop layout
    # fused -> file -> loop SplitNet
    with torch.no_grad():
        for p in fused.parameters():
            p.add_(torch.randn_like(p))
    checkpoint.save_atomic({"model_state": fused.state_dict()}, tmp_path / "fused.pt")
    loop = tiny_net("small_cnn", 8, 20, 1, 3)
    loop.load_state_dict(checkpoint.load(tmp_path / "fused.pt")["model_state"])
    assert_close_tree(loop.state_dict(), fused.state_dict(), 0)
    # loop -> fused, inside a task (the prefix `model.` as in last.pt)
    task = CoTrainingTask(FusedSplitNet.from_splitnet(tiny_net("small_cnn", 8, 20, 1, 3)), 0.5, 0)
    task.load_state_dict({f"model.{k}": v for k, v in loop.state_dict().items()})
    assert_close_tree(task.model.state_dict(), loop.state_dict(), 0)


def test_strict_load_reports_missing_and_unexpected_keys():
    fused = FusedSplitNet.from_splitnet(tiny_net("small_cnn", 8, 20, 1, 2))
    state = tiny_net("small_cnn", 8, 20, 1, 2).state_dict()
    del state["members.1.head.fc.weight"]
    state["members.2.head.fc.bias"] = torch.zeros(5)
    with pytest.raises(RuntimeError, match="Missing key.*head.fc.weight") as err:
        fused.load_state_dict(state)
    assert "members.2.head.fc.bias" in str(err.value)


def test_export_gives_ordinary_independent_members():
    net = tiny_net("wide_resnet10_2", 1, 8, 3, 2)
    exported = FusedSplitNet.from_splitnet(net).eval().to_splitnet()
    assert isinstance(exported, SplitNet) and exported.split_factor == 2
    assert type(exported.members[0]) is type(net.members[0])
    x = torch.randn(BATCH, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), net.eval()(x))
        exported.members[0].head.fc.bias.add_(1.0)  # a copy: the source is untouched
    assert not torch.equal(exported.members[0].head.fc.bias, net.members[0].head.fc.bias)


def test_execution_model_choices():
    net = tiny_net("small_cnn", 8, 20, 1, 2)
    assert execution_model(net, "loop") is net
    assert isinstance(execution_model(net, "fused"), FusedSplitNet)
    single = tiny_net("small_cnn", 8, 20, 1, 1)
    assert execution_model(single, "fused") is single  # nothing to fuse
    with pytest.raises(ValueError, match="split.execution"):
        execution_model(net, "threads")


class ChannelConcat(nn.Module):
    """A member whose forward mixes channels: packing must refuse it, not compute nonsense."""

    input_size = (2, 4, 4)

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1)
        self.fc = nn.Linear(6 * 16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.fc(torch.cat([y, y.flip(1)], dim=1).flatten(1))


def test_unpackable_family_falls_back_to_loop():
    net = SplitNet([ChannelConcat(), ChannelConcat()])
    with pytest.raises(UnsupportedModuleError):
        FusedSplitNet.from_splitnet(net)
    with pytest.warns(UserWarning, match="running the loop"):
        assert execution_model(net, "fused") is net
    weighted = SplitNet([nn.PReLU(), nn.PReLU()])  # owns a weight dnc does not pack
    with pytest.raises(UnsupportedModuleError, match="PReLU"):
        FusedSplitNet(list(weighted.members))


def test_member_groups_and_devices():
    assert member_groups(4, 2) == [range(0, 2), range(2, 4)]
    assert member_groups(5, 2) == [range(0, 3), range(3, 5)]
    assert member_groups(2, 3) == [range(0, 1), range(1, 2)]
    assert parse_devices("cpu, cpu") == [torch.device("cpu")] * 2
    with pytest.raises(ValueError, match="devices"):
        parse_devices("")


@pytest.mark.parametrize("execution", ["fused", "loop"])
def test_two_cpu_devices_run_members_concurrently(execution):
    net = tiny_net("bottleneck_resnet20", 8, 8, 3, 4).eval()
    parallel = ParallelSplitNet(net, parse_devices("cpu,cpu"), execution).eval()
    assert len(parallel.groups) == 2 and parallel.to("cpu") is parallel
    # Each group waits for the other to start: run one after the other, they would time out.
    both_running = threading.Barrier(2, timeout=10)

    def wait_for_the_other(*_: object) -> None:
        both_running.wait()

    hooks = [g.register_forward_pre_hook(wait_for_the_other) for g in parallel.groups]
    x = torch.randn(BATCH, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(parallel(x), net(x), rtol=1e-4, atol=1e-5)
        for hook in hooks:
            hook.remove()
        for k in (1, 3):
            torch.testing.assert_close(parallel.predict(x, k), net.predict(x, k))
    assert parallel.members is net.members  # cost counting reads the ordinary members


@pytest.mark.slow
def test_fused_training_writes_loop_checkpoints_and_evaluates_on_two_devices(
    tiny_params, tmp_path
):
    # Exactness is tested in float64 above; float32 trajectories of the two part ways
    # after ~10 SGD steps (rounding amplified chaotically), so here: it trains and loads.
    params = tiny_params.with_overrides({"split.execution": "fused"})
    result = stages.train(params, None, tmp_path / "run")
    assert isinstance(result.state.history[-1]["train/loss"], float)
    state = checkpoint.load(result.best_path)["model_state"]
    loop = tiny_params.with_overrides({"split.execution": "loop"})
    model, _ = builders.load_model(loop, tmp_path / "run", 10, 1, 8)  # the loop layout
    assert isinstance(model, SplitNet) and list(model.state_dict()) == list(state)
    metrics = stages.evaluate(
        params, None, tmp_path / "run", tmp_path / "metrics.json", devices=["cpu", "cpu"]
    )
    assert metrics["config"]["devices"] == ["cpu", "cpu"]
    assert [p["k"] for p in metrics["prefixes"]] == [1, 2]
    assert metrics["ensemble"]["acc"] > 50  # digits: 10 classes, chance is 10 %
