"""The reference recipe as config: `model.style`, the recipe keys, and the CIFAR presets run
end to end (one CPU epoch on tiny CIFAR-format files, AutoAugment on)."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dnc import builders, stages
from dnc.cli import main
from dnc.methods.splitnet import CoTrainingTask
from dnc.models import REFERENCE_NAMES, create_model, get_spec, styled_name
from dnc.models.pyramidnet import PyramidNet
from dnc.models.reference_resnet import ReferenceResNet
from dnc.models.wide_resnet import WideResNet
from dnc.train.param_groups import exempt_groups
from dnc.train.schedule import build_scheduler
from pipelines.dvc.preset import load_preset

ROOT = Path(__file__).resolve().parents[1]
KW = {"num_classes": 5, "in_chans": 3, "image_size": 8}


def test_style_picks_the_reference_twin() -> None:
    assert styled_name("wide_resnet28_10", "reference") == "wide_resnet28_10_ref"
    assert styled_name("wide_resnet28_10", "preact") == "wide_resnet28_10"
    assert styled_name("pyramidnet20", "reference") == "pyramidnet20"  # reference-only
    assert isinstance(
        create_model("wide_resnet16_8", width=1, style="reference", **KW), ReferenceResNet
    )
    assert isinstance(create_model("wide_resnet16_8", width=1, style="preact", **KW), WideResNet)
    assert isinstance(create_model("pyramidnet20", width=4, style="reference", **KW), PyramidNet)
    # Every twin: the preact variant's family, default width and paper weight decay.
    assert len(REFERENCE_NAMES) == 7
    for preact, ref in REFERENCE_NAMES.items():
        a, b = get_spec(preact), get_spec(ref)
        assert (a.style, b.style) == ("preact", "reference")
        assert (a.family, a.default_width, a.base_weight_decay) == (
            b.family,
            b.default_width,
            b.base_weight_decay,
        )
    with pytest.raises(ValueError, match="no reference-style twin"):
        styled_name("small_cnn", "reference")
    with pytest.raises(ValueError, match="only in style reference"):
        styled_name("pyramidnet272", "preact")


def test_variant_default_dropout() -> None:
    # model.dropout: null -> the variant's own, then divided by the family's rule.
    from dnc.models import member_config

    assert member_config("wide_resnet40_10_ref", None, None, 4)["dropout"] == pytest.approx(0.025)
    assert member_config("wide_resnet40_10", None, None, 4)["dropout"] == 0.0
    assert member_config("pyramidnet272", None, None, 4)["dropout"] == pytest.approx(0.25)
    assert member_config("wide_resnet40_10_ref", None, 0.0, 4)["dropout"] == 0.0  # explicit 0


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("bogus", "model.style: Input should be 'preact' or 'reference'"),
        ("reference", "model.style: 'small_cnn' has no reference-style twin"),
    ],
)
def test_bad_style_exits_2_naming_the_key(tmp_path, capsys, value: str, why: str) -> None:
    args = ["train", "--params", str(ROOT / "params.yaml"), "--out", str(tmp_path / "run")]
    assert main([*args, "--set", f"model.style={value}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {why}") and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_reference_only_model_in_preact_style_exits_2(capsys) -> None:
    args = ["info", "--params", str(ROOT / "params.yaml"), "--model", "pyramidnet20"]
    assert main(args) == 2
    assert "model.style: 'pyramidnet20' exists only in style reference" in capsys.readouterr().err


# `dnc info` of preact models before model.style existed (main at 7a34d2b): ensemble params,
# ensemble MACs, undivided params, undivided MACs on CIFAR-100.
PREACT_INFO = {
    ("wide_resnet16_8", 1): (11_007_540, 1_548_191_744, 11_007_540, 1_548_191_744),
    ("resnext29_8x64d", 4): (36_890_256, 5_644_632_064, 34_518_948, 5_387_358_208),
    ("small_cnn", 2): (516_918, 17_399_776, 494_340, 16_749_056),
}
# Member params the reference code builds for CIFAR-100 (docs/reference.md).
REFERENCE_MEMBER_PARAMS = {
    ("wide_resnet16_8", 1): 11_009_332,
    ("wide_resnet28_10", 2): 17_927_508,
    ("resnext29_8x64d", 4): 9_222_564,
}


def _info(default_params, name: str, split: int, style: str) -> dict:
    overrides = {"model.name": name, "split.factor": split, "data.dataset": "cifar100"}
    return stages.info(default_params.with_overrides({**overrides, "model.style": style}))


@pytest.mark.parametrize(("name", "split"), list(PREACT_INFO))
def test_info_unchanged_for_preact(default_params, name: str, split: int) -> None:
    out = _info(default_params, name, split, "preact")
    got = (out["ensemble"]["params"], out["ensemble"]["macs"])
    assert (*got, out["undivided"]["params"], out["undivided"]["macs"]) == PREACT_INFO[name, split]
    assert out["model"] == name and out["style"] == "preact"


@pytest.mark.parametrize(("name", "split"), list(REFERENCE_MEMBER_PARAMS))
def test_info_equals_the_reference_for_reference(default_params, name: str, split: int) -> None:
    out = _info(default_params, name, split, "reference")
    want = REFERENCE_MEMBER_PARAMS[name, split]
    assert [m["params"] for m in out["members"]] == [want] * split
    assert out["ensemble"]["params"] == split * want
    assert out["model"] == f"{name}_ref" and out["style"] == "reference"


def test_exempt_groups_split_decayed_groups_only() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.Linear(2, 2))
    conv, bn, fc = net
    gate = nn.Parameter(torch.zeros(3))  # e.g. architecture logits, already undecayed
    groups = [
        {"params": list(net.parameters()), "weight_decay": 1e-3},
        {"params": [gate], "weight_decay": 0.0},
    ]
    ids = [[id(p) for p in g["params"]] for g in exempt_groups(net, groups, "bias")]
    wd = [g["weight_decay"] for g in exempt_groups(net, groups, "bias")]
    assert ids == [
        [id(conv.weight), id(bn.weight), id(fc.weight)],
        [id(conv.bias), id(bn.bias), id(fc.bias)],
        [id(gate)],
    ]
    assert wd == [1e-3, 0.0, 0.0]
    norm = exempt_groups(net, groups, "norm_bias")
    assert [len(g["params"]) for g in norm] == [2, 4, 1]
    assert exempt_groups(net, groups, "none") is groups


def test_recipe_keys_reach_the_schedule_and_the_loss(default_params) -> None:
    p = default_params.with_overrides(
        {"train.lr_floor": "clamp", "train.epochs": 10, "train.warmup_epochs": 0}
    ).train
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=p.lr)
    sched = build_scheduler(opt, p, steps_per_epoch=10)
    for _ in range(99):
        opt.step()
        sched.step()
    # Last step: 0.05 (1 + cos(pi 99 / 100)) = 2.47e-5 < min_lr, so the clamp holds min_lr.
    assert 0.5 * p.lr * (1 + math.cos(math.pi * 0.99)) < p.min_lr
    assert opt.param_groups[0]["lr"] == pytest.approx(p.min_lr)
    net = builders.build_model(default_params, 3, 1, 8)
    per_epoch = CoTrainingTask(net, 0.5, 4, cot_warmup_per_epoch=True)
    per_step = CoTrainingTask(net, 0.5, 4)
    views, targets = torch.randn(2, 4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    assert per_epoch.training_step(views, targets, 2.5)["cot_weight"] == pytest.approx(0.25)
    assert per_step.training_step(views, targets, 2.5)["cot_weight"] == pytest.approx(0.3125)


def _write_cifar(root: Path, name: str, n: int) -> None:
    """CIFAR python-pickle files with the real names and keys, `n` random images each."""
    rng = np.random.default_rng(0)
    cifar10 = name == "cifar10"
    classes = 10 if cifar10 else 100
    folder = root / ("cifar-10-batches-py" if cifar10 else "cifar-100-python")
    folder.mkdir(parents=True)
    files = (
        [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"] if cifar10 else ["train", "test"]
    )
    for file in files:
        labels = [int(y) for y in rng.integers(0, classes, n)]
        batch = {"batch_label": file, "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        batch.update(
            {"labels": labels} if cifar10 else {"fine_labels": labels, "coarse_labels": labels}
        )
        with open(folder / file, "wb") as fh:
            pickle.dump(batch, fh, protocol=2)
    names = [f"class{i}" for i in range(classes)]
    meta = {"label_names": names} if cifar10 else {"fine_label_names": names}
    with open(folder / ("batches.meta" if cifar10 else "meta"), "wb") as fh:
        pickle.dump(meta, fh, protocol=2)


# Only the size shrinks (width, images, epochs, latency timing); every recipe key stays.
SHRINK = {
    "data.val_size": 8,
    "data.num_workers": 0,
    "train.epochs": 1,
    "train.batch_size": 8,
    "train.device": "cpu",
    "eval.batch_size": 8,
    "eval.latency_batch_sizes": [1],
    "eval.latency_repeats": 1,
}


@pytest.mark.parametrize(
    ("preset", "shrink"),
    [
        ("cifar10", {"model.width": 1}),
        ("cifar100", {"model.width": 1}),
        # The same family, divide rule, ShakeDrop and recipe, 20 layers deep instead of 272.
        ("cifar100_pyramidnet", {"model.name": "pyramidnet20", "model.width": 8}),
        pytest.param(
            "cifar100_pyramidnet", {"model.width": 1}, marks=pytest.mark.slow, id="pyramidnet272"
        ),
    ],
)
def test_cifar_presets_run_end_to_end(tmp_path, default_params, preset: str, shrink: dict) -> None:
    overrides = load_preset(ROOT / "presets" / f"{preset}.yaml")
    overrides = {k: v for k, v in overrides.items() if not k.startswith("compare")}
    params = default_params.with_overrides(
        {**overrides, **SHRINK, **shrink, "data.root": str(tmp_path / "data")}
    )
    assert params.model.style == "reference" and params.data.autoaugment
    assert params.train.weight_decay_exempt == "bias" and params.train.lr_floor == "clamp"
    _write_cifar(tmp_path / "data", params.data.dataset, n=4 if preset == "cifar10" else 20)
    result = stages.train(params, None, tmp_path / "run")
    assert result.best_path.is_file() and len(result.state.history) == 1
    metrics = stages.evaluate(params, None, tmp_path / "run", tmp_path / "metrics.json")
    assert metrics["config"]["model"] == params.model.variant
    assert 0.0 <= metrics["ensemble"]["acc"] <= 100.0  # percent
