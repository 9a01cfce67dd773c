"""Every registered model: shapes, the stem/blocks/head layout, skippable blocks, init."""

from __future__ import annotations

import pytest
import torch
from conftest import every_model, every_model_and_split
from torch import nn

from dnc.models import (
    create_model,
    get_spec,
    list_models,
    member_config,
    register_model,
)
from dnc.models.registry import check_backbone, list_families, tiny_instance

FAMILIES = list_families()

TINY = ["small_cnn", "wide_resnet16_2", "bottleneck_resnet20", "basic_resnet20", "resnext11_4x4d"]
LARGE_PARAMS = 20e6  # above this a CPU forward/backward takes about a second: marked slow


def _meta_model(name: str, **kwargs: float) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, num_classes=10, in_chans=3, image_size=32, **kwargs)


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _large(name: str) -> bool:
    """Over LARGE_PARAMS, or a deep reference-style variant but the tiny PyramidNet-20
    (their twins run in the quick tier, tests/test_reference_*.py covers them)."""
    if get_spec(name).style == "reference" and name != "pyramidnet20":
        return True
    return _num_params(_meta_model(name)) > LARGE_PARAMS


def _build(name: str, split: int, in_chans: int = 3, image_size: int = 8) -> nn.Module:
    member = member_config(name, None, 0.2, split)
    return create_model(name, num_classes=7, in_chans=in_chans, image_size=image_size, **member)


@pytest.mark.parametrize(("name", "split"), every_model_and_split((1, 2), _large))
def test_forward_backward_cpu(name: str, split: int) -> None:
    torch.manual_seed(0)
    model = _build(name, split)
    logits = model(torch.randn(2, 3, 8, 8))
    assert logits.shape == (2, 7)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(("name", "split"), every_model_and_split((2, 1)))
def test_forward_backward_meta_cifar(name: str, split: int) -> None:
    with torch.device("meta"):
        model = create_model(
            name,
            num_classes=100,
            in_chans=3,
            image_size=32,
            **member_config(name, None, 0.0, split),
        )
        logits = model(torch.randn(2, 3, 32, 32))
        logits.sum().backward()
    assert logits.shape == (2, 100)


@pytest.mark.parametrize("name", every_model())
def test_layout_and_skippable_flags(name: str) -> None:
    model = _meta_model(name)
    assert isinstance(model.blocks, nn.Sequential)
    assert model.head.fc.in_features == model.num_features
    shapes: list[tuple[nn.Module, torch.Size, torch.Size]] = []
    hooks = [
        block.register_forward_hook(lambda m, i, o: shapes.append((m, i[0].shape, o.shape)))
        for block in model.blocks
    ]
    with torch.device("meta"):
        features = model.forward_features(torch.randn(2, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    assert features.shape[:2] == (2, model.num_features)
    assert len(shapes) == len(model.blocks)
    for block, in_shape, out_shape in shapes:
        assert isinstance(block.skippable, bool)
        assert block.skippable == (in_shape == out_shape), type(block).__name__


@pytest.mark.parametrize("name", TINY)
def test_dropping_a_skippable_block_keeps_shapes(name: str) -> None:
    model = _build(name, split=1)
    skippable = [i for i, block in enumerate(model.blocks) if block.skippable]
    assert skippable, f"{name} has no skippable block"
    for drop in skippable:
        kept = nn.Sequential(*(b for i, b in enumerate(model.blocks) if i != drop))
        logits = model.head(kept(model.stem(torch.randn(2, 3, 8, 8))))
        assert logits.shape == (2, 7)


@pytest.mark.parametrize("image_size", [8, 28])
@pytest.mark.parametrize("name", [*TINY, "wide_resnet10_2"])
def test_grayscale_small_images(name: str, image_size: int) -> None:
    model = _build(name, split=1, in_chans=1, image_size=image_size)
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(3, 1, image_size, image_size))
    assert logits.shape == (3, 7)
    assert model.input_size == (1, image_size, image_size)


def test_unknown_model_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet9000'; choose one of: .*small_cnn"):
        create_model("resnet9000", num_classes=10, in_chans=3, image_size=32)


def test_registry_contents() -> None:
    names = list_models()
    assert names == sorted(names)
    assert {"small_cnn", "wide_resnet28_10", "bottleneck_resnet110", "resnext29_8x64d"} <= set(
        names
    )
    for name in names:
        spec = get_spec(name)
        assert spec.name == name and spec.family in FAMILIES
        assert spec.base_weight_decay in (1e-4, 5e-4)
        assert spec.description


def test_duplicate_registration_rejected() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("small_cnn", 32, 5e-4, "dup", family="small_cnn")(
            lambda **kw: nn.Identity()
        )


def test_width_default_float_and_dropout() -> None:
    default = create_model("small_cnn", num_classes=10, in_chans=1, image_size=28)
    assert default.num_features == 4 * int(get_spec("small_cnn").default_width)
    fractional = create_model(
        "small_cnn", num_classes=10, in_chans=1, image_size=28, width=22.6, dropout=0.3
    )
    assert fractional.num_features == 4 * 23
    assert fractional.head.dropout.p == 0.3
    with pytest.raises(ValueError, match="width must be positive"):
        create_model("small_cnn", num_classes=10, in_chans=1, image_size=28, width=0)


def test_init() -> None:
    """Kaiming-normal (fan_out) convs and zero linear biases, not PyTorch's defaults: the
    default conv init has std 1/sqrt(3 fan_in), 2-3x smaller here, and default biases are
    uniform, never all zero."""
    model = _build("bottleneck_resnet20", split=1)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.weight.numel() > 4000]
    assert convs
    for conv in convs:
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        fan_out //= conv.groups
        assert conv.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.15)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears and all(torch.all(m.bias == 0) for m in linears)


@pytest.mark.parametrize(
    ("name", "millions"),
    # He et al. 2016 (CIFAR-10, Table 6): 0.27 M, 0.85 M, 1.7 M. The 1x1 projection
    # shortcuts used here (option B, for the packed execution) add ~1%.
    [("basic_resnet20", 0.27), ("basic_resnet56", 0.85), ("basic_resnet110", 1.7)],
)
def test_basic_resnets_match_the_literature(name: str, millions: float) -> None:
    with torch.device("meta"):
        model = create_model(name, num_classes=10, in_chans=3, image_size=32)
    n = sum(p.numel() for p in model.parameters())
    assert n == pytest.approx(millions * 1e6, rel=0.025)
    # 3 stages x n basic blocks, depth 6n + 2; 16/32/64 channels.
    depth = int(name.removeprefix("basic_resnet"))
    assert len(model.blocks) == 3 * (depth - 2) // 6
    assert model.num_features == 64


def test_old_bottleneck_names_warn_and_still_build() -> None:
    with pytest.warns(DeprecationWarning, match="bottleneck_resnet110"):
        spec = get_spec("resnet110")
    assert spec.name == "bottleneck_resnet110"
    assert "resnet110" not in list_models()


@pytest.mark.parametrize("name", list_models())
def test_every_builtin_variant_keeps_the_backbone_contract(name: str) -> None:
    # dnc's own variants skip the check at registration (it cost each process ~1 s).
    check_backbone(tiny_instance(get_spec(name).builder), name)
    broken = tiny_instance(get_spec(name).builder)
    del broken.head.fc
    with pytest.raises(TypeError, match="head.fc"):
        check_backbone(broken, name)


def test_registration_checks_the_backbone_contract() -> None:
    class NoBlocks(nn.Module):
        def __init__(self, **kwargs: object) -> None:
            super().__init__()
            self.stem = nn.Identity()

    with pytest.raises(TypeError, match="blocks"):
        register_model("no_blocks", 1, 5e-4, "broken", family="small_cnn")(NoBlocks)
    assert "no_blocks" not in list_models()
