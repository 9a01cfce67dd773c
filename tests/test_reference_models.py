"""Reference-style members and recipe parts, pinned by hand-computed layouts and values.

The side-by-side check against the authors' code lives outside the repository (it needs
their code); docs/reference.md has its table. These tests pin what that check found with
oracles that need no reference: hand-listed tensor layouts, closed-form schedule values,
constructed inputs, and the parameter counts the reference code printed.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dnc.config import DataConfig, TrainConfig
from dnc.data.augment import BatchViews, random_erasing
from dnc.data.autoaugment import apply_ops, cifar10_policy, draw_ops, per_sample_autoaugment
from dnc.data.registry import get_dataset_info
from dnc.models import create_model, divide_dropout, member_config, split_width
from dnc.models.pyramidnet import PyramidNet, ShakeDrop
from dnc.models.reference_resnet import (
    REFERENCE_NAMES,
    reference_resnet,
    reference_resnext,
    reference_shortcut,
    reference_wide_resnet,
)
from dnc.train.losses import cot_weight_at
from dnc.train.param_groups import decay_groups
from dnc.train.schedule import lr_at

KW = {"num_classes": 5, "in_chans": 3, "image_size": 8}


def _conv_bn(out_ch: int, in_ch: int, k: int) -> list[tuple[int, ...]]:
    """Shapes a conv (no bias) + BN contribute to a state dict, in order."""
    return [(out_ch, in_ch, k, k), (out_ch,), (out_ch,), (out_ch,), (out_ch,), ()]


def _bn(ch: int) -> list[tuple[int, ...]]:
    return [(ch,), (ch,), (ch,), (ch,), ()]


def _shapes(model: nn.Module) -> list[tuple[int, ...]]:
    return [tuple(t.shape) for t in model.state_dict().values()]


def test_wrn_layout_matches_hand_listed_reference_order() -> None:
    # WRN-10-1: one basic block per stage; 16 -> 16 (no shortcut), 16 -> 32 -> 64 (stride 2).
    want = _conv_bn(16, 3, 3)
    want += _conv_bn(16, 16, 3) + _conv_bn(16, 16, 3)
    want += _conv_bn(32, 16, 3) + _conv_bn(32, 32, 3) + _conv_bn(32, 16, 1)
    want += _conv_bn(64, 32, 3) + _conv_bn(64, 64, 3) + _conv_bn(64, 32, 1)
    want += [(5, 64), (5,)]
    assert _shapes(reference_wide_resnet(10, width=1, **KW)) == want


def test_resnet_and_resnext_layouts() -> None:
    # ResNet-11, base 4: stem 4; bottleneck 4 -> 4x4 = 16 out, shortcut 1x1 at stride 1 too.
    block = _conv_bn(4, 4, 1) + _conv_bn(4, 4, 3) + _conv_bn(16, 4, 1) + _conv_bn(16, 4, 1)
    assert (
        _shapes(reference_resnet(11, width=4, **KW))[: 6 + len(block)] == _conv_bn(4, 3, 3) + block
    )
    # ResNeXt-11 2x4d: inner int(64 * 4 / 64) * 2 = 8 channels, grouped 3x3 weight (8, 4, 3, 3).
    shapes = _shapes(reference_resnext(11, 4, width=2, **KW))
    assert shapes[:6] == _conv_bn(64, 3, 3)
    assert shapes[6:24] == _conv_bn(8, 64, 1) + _conv_bn(8, 4, 3) + _conv_bn(256, 8, 1)


def test_pyramidnet_layout_and_widening() -> None:
    # PyramidNet-11, alpha 6: n = 1, +2 channels per block: planes 18, 20, 22 (x4 out).
    net = PyramidNet(11, width=6, dropout=0.3, **KW)
    want = [(16, 3, 3, 3), *_bn(16)]
    in_ch = 16
    for planes in (18, 20, 22):
        want += [*_bn(in_ch), (planes, in_ch, 1, 1), *_bn(planes), (planes, planes, 3, 3)]
        want += [*_bn(planes), (4 * planes, planes, 1, 1), *_bn(4 * planes)]
        in_ch = 4 * planes
    want += [*_bn(88), (5, 88), (5,)]
    assert _shapes(net) == want
    # ShakeDrop probabilities rise linearly to the final p: p_i = 0.3 (i + 1) / 3.
    assert [b.shake_drop.p_drop for b in net.blocks] == pytest.approx([0.1, 0.2, 0.3])


# Parameter counts the reference code builds for CIFAR-100 members (side-by-side run).
REFERENCE_PARAMS = [
    ("wide_resnet16_8_ref", 1, 11_009_332),
    ("wide_resnet28_10_ref", 2, 17_927_508),
    ("wide_resnet40_10_ref", 4, 14_005_524),
    ("bottleneck_resnet110_ref", 2, 666_736),
    ("bottleneck_resnet164_ref", 4, 444_684),
    ("resnext29_8x64d_ref", 4, 9_222_564),
    ("resnext29_16x64d_ref", 2, 34_518_948),
    ("pyramidnet272", 1, 26_288_692),
    ("pyramidnet272", 4, 8_192_920),
    ("pyramidnet164", 2, 14_671_580),
]


@pytest.mark.parametrize(("name", "split", "params"), REFERENCE_PARAMS)
def test_member_params_equal_the_reference(name: str, split: int, params: int) -> None:
    with torch.device("meta"):
        member = member_config(name, None, 0.0, split)
        model = create_model(name, num_classes=100, in_chans=3, image_size=32, **member)
    assert sum(p.numel() for p in model.parameters()) == params


def test_divide_rules() -> None:
    assert split_width("pyramidnet272", 200, 4) == 100  # alpha / sqrt(S), unrounded
    assert split_width("pyramidnet272", 200, 2) == pytest.approx(200 / math.sqrt(2))
    assert divide_dropout("pyramidnet272", 0.5, 4) == pytest.approx(0.25)  # ShakeDrop 0.5/sqrt(S)
    assert divide_dropout("wide_resnet40_10_ref", 0.1, 4) == pytest.approx(0.025)
    assert REFERENCE_NAMES["wide_resnet28_10"] == "wide_resnet28_10_ref"
    assert split_width("wide_resnet28_10_ref", 10, 2) == 7


def test_zero_init_last_bn_and_classifier_std() -> None:
    torch.manual_seed(0)
    model = reference_wide_resnet(16, width=8, num_classes=100, in_chans=3, image_size=32)
    zero = [
        n
        for n, p in model.named_parameters()
        if p.dim() == 1 and n.endswith("weight") and not p.any()
    ]
    assert zero == [f"blocks.{i}.bn2.weight" for i in range(6)]
    # 100 x 512 draws from N(0, 1e-3): the sample std is within 2 % of 1e-3.
    assert model.head.fc.weight.std().item() == pytest.approx(1e-3, rel=0.02)
    assert not model.head.fc.bias.any()
    # With the branch zeroed a block is identity + ReLU: non-negative input passes unchanged.
    block = model.blocks[1].eval()
    x = torch.rand(2, 128, 4, 4)
    assert torch.equal(block(x), x)


def test_stride2_shortcut_is_avgpool_then_projection() -> None:
    shortcut = reference_shortcut(1, 1, 2).eval()
    with torch.no_grad():
        shortcut[1].weight.fill_(1.0)  # 1x1 conv = identity; BN at init is identity in eval
    x = torch.arange(16.0).view(1, 1, 4, 4)
    want = torch.tensor([[2.5, 4.5], [10.5, 12.5]])  # means of the 2x2 blocks
    assert torch.allclose(shortcut(x)[0, 0], want, atol=1e-4)
    assert reference_shortcut(4, 4, 1) is None


def test_shakedrop_eval_scales_and_train_gates() -> None:
    drop = ShakeDrop(0.25)
    x = torch.ones(3, 2, 1, 1)
    assert torch.equal(drop.eval()(x), 0.75 * x)
    drop.train()
    torch.manual_seed(0)
    outs = [drop(x) for _ in range(200)]
    kept = sum(torch.equal(o, x) for o in outs)
    assert 120 < kept < 180  # gate open with probability 0.75
    assert all(o.abs().max() <= 1 for o in outs)
    # Backward: the identity through an open gate, else a per-sample factor in [0, 1].
    for _ in range(20):
        leaf = x.clone().requires_grad_()
        out = drop(leaf)
        out.sum().backward()
        grad = leaf.grad
        if torch.equal(out, leaf):
            assert torch.equal(grad, torch.ones_like(grad))
        else:
            assert (grad >= 0).all() and (grad <= 1).all() and (grad.std(dim=(1, 2, 3)) == 0).all()


def test_no_decay_groups() -> None:
    model = reference_wide_resnet(10, width=1, **KW)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    none = decay_groups(model, 5e-4)
    assert len(none) == 1 and len(none[0]["params"]) == len(list(model.parameters()))
    bias = decay_groups(model, 5e-4, exempt="bias")
    assert {id(p) for p in bias[1]["params"]} == {id(m.bias) for m in bns} | {
        id(model.head.fc.bias)
    }
    assert bias[0]["weight_decay"] == 5e-4 and bias[1]["weight_decay"] == 0.0
    both = decay_groups(model, 5e-4, exempt="norm_bias")
    assert len(both[1]["params"]) == 2 * len(bns) + 1
    with pytest.raises(ValueError, match="exemption"):
        decay_groups(model, 5e-4, exempt="all")  # type: ignore[arg-type]


def _cfg(lr_floor: str = "blend") -> TrainConfig:
    return TrainConfig(
        epochs=300, batch_size=128, lr=0.1, min_lr=1e-4, warmup_epochs=20, warmup_lr=5e-3,
        momentum=0.9, nesterov=True, weight_decay=5e-4, cot_weight=0.5, cot_warmup_epochs=40,
        cot_warmup_per_epoch=True, weight_decay_exempt="bias", lr_floor=lr_floor, sync_bn=False,
        mixup_alpha=0.2, label_smoothing=0.0, amp=False, channels_last=False, device="cpu",
        progress=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("step", "clamp", "blend"),
    [
        (0, 5e-3, 5e-3),  # slow start begins at warmup_lr
        (100, 0.0525, 0.0525),  # half-way through the 20-epoch slow start
        (200, 0.1, 0.1),  # cosine starts at lr
        (1600, 0.05, 0.05005),  # cosine mid-point: lr / 2 vs (lr + min_lr) / 2
        # last step: clamp sits on the floor, blend a hair above it
        (2999, 1e-4, 1e-4 + 0.04995 * (1 + math.cos(math.pi * 2799 / 2800))),
    ],
)
def test_lr_at_named_steps(step: int, clamp: float, blend: float) -> None:
    # 10 steps per epoch
    assert lr_at(step, 10, _cfg("clamp")) == pytest.approx(clamp, rel=1e-9)
    assert lr_at(step, 10, _cfg()) == pytest.approx(blend, rel=1e-4)


def test_clamp_floor_is_lower_near_the_end() -> None:
    # Epoch 297.5 of 300: the cosine 0.05 (1 + cos(pi 2775 / 2800)) ~ 2e-5 is below the floor.
    assert lr_at(2975, 10, _cfg("clamp")) == 1e-4
    assert lr_at(2975, 10, _cfg()) == pytest.approx(
        1e-4 + 0.5 * 0.0999 * (1 + math.cos(math.pi * 2775 / 2800))
    )


def test_cot_weight_per_epoch() -> None:
    assert cot_weight_at(10.7, 0.5, 40, per_epoch=True) == pytest.approx(0.125)
    assert cot_weight_at(10.7, 0.5, 40) == pytest.approx(0.13375)
    assert cot_weight_at(0.3, 0.5, 40, per_epoch=True) == 0.005  # floored
    assert cot_weight_at(40.0, 0.5, 40, per_epoch=True) == 0.5


def test_autoaugment_draws_per_image_and_is_seeded() -> None:
    images = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8).repeat(16, 1, 1, 1)
    out = per_sample_autoaugment(images, torch.Generator().manual_seed(0))
    distinct = {out[i].numpy().tobytes() for i in range(16)}
    assert len(distinct) > 4  # one batch call would give every copy the same operation
    again = per_sample_autoaugment(images, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_grouped_autoaugment_equals_one_call_per_image() -> None:
    # Oracle: torchvision's own op, applied to one image at a time.
    torch.manual_seed(0)
    images = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8)
    ops = draw_ops(24, 32, 32, torch.Generator().manual_seed(5))
    policy, grouped = cifar10_policy(), apply_ops(images, ops)
    for i, image_ops in enumerate(ops):
        x = images[i : i + 1]
        for op, magnitude in image_ops:
            x = policy._apply_image_or_video_transform(
                x, op, magnitude, interpolation=policy.interpolation, fill=policy._fill
            )
        assert torch.equal(grouped[i], x[0]), image_ops


def test_autoaugment_views_differ_per_member() -> None:
    info = get_dataset_info("cifar10")
    cfg = _data_cfg()
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    on = BatchViews(info, _data_cfg(autoaugment=True), 2)
    off = BatchViews(info, cfg, 2)
    views = on(images, torch.Generator().manual_seed(1))  # (V, B, C, H, W)
    assert views.shape == (2, 4, 3, 32, 32)
    assert not torch.equal(views[0], views[1])
    assert not torch.equal(views, off(images, torch.Generator().manual_seed(1)))
    assert torch.equal(views, on(images, torch.Generator().manual_seed(1)))


def _data_cfg(autoaugment: bool = False) -> DataConfig:
    return DataConfig(
        dataset="cifar10", root=None, download=False, split_seed=0, val_size=0, train_size=None,
        test_size=None, image_size=None, augment="standard", autoaugment=autoaugment,
        random_erasing=0.0, erasing_scale=[0.02, 0.33], erasing_ratio=[0.3, 3.3], num_workers=0,
    )  # fmt: skip


def test_reference_erasing_box_is_a_small_square() -> None:
    images = torch.ones(64, 1, 32, 32)
    out = random_erasing(images, 1.0, torch.Generator().manual_seed(0), (0.0625, 0.1), (0.99, 1.0))
    areas = (out == 0).flatten(1).sum(1)
    # Sides round(sqrt(64 .. 102.4 x aspect 0.99-1)): 8-10 pixels, at most one apart.
    assert areas.min() >= 64 and areas.max() <= 100 and len(set(areas.tolist())) > 1
    rows = (out == 0).any(3).sum(2).flatten()  # box heights
    cols = (out == 0).any(2).sum(2).flatten()  # box widths
    assert ((rows - cols).abs() <= 1).all() and (rows * cols == areas).all()
