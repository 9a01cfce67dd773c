"""The CIFAR presets: they apply to the committed params.yaml and give the paper's recipe."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from dnc.config_loading import load_params
from pipelines.cli import main
from pipelines.dvc.matrix import load_comparison

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_preset_gives_the_paper_recipe(tmp_path, name, capsys) -> None:
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    args = ["preset", name, "--params", str(params), "--presets-dir", str(ROOT / "presets")]
    assert main([*args, "--set", "data.root=/data/cifar"]) == 0
    p = load_params(params)
    assert (p.data.dataset, p.data.root, p.model.name, p.model.style) == (
        name,
        "/data/cifar",
        "wide_resnet28_10",
        "reference",
    )
    assert p.model.variant == "wide_resnet28_10_ref"
    t = p.train
    assert (t.epochs, t.lr, t.batch_size, t.weight_decay, t.mixup_alpha) == (
        300,
        0.1,
        128,
        5e-4,
        0.2,
    )
    assert (t.warmup_epochs, t.warmup_lr, t.min_lr) == (20, 0.005, 1e-4)
    assert (t.cot_weight, t.cot_warmup_epochs, p.data.random_erasing) == (0.5, 40, 0.5)
    assert p.data.val_size > 0 and p.eval.batch_size == 100
    assert (p.data.autoaugment, p.data.erasing_ratio) == (True, [0.99, 1.0])
    assert (t.weight_decay_exempt, t.lr_floor, t.cot_warmup_per_epoch) == ("bias", "clamp", True)
    comparison = load_comparison(params)
    assert sorted(c["split.factor"] for c in comparison.configs.values()) == [1, 2, 4]
    assert "# dnc experiment parameters" in params.read_text()  # comments kept
    assert "cifar" in capsys.readouterr().out


def test_preset_member_widths_follow_the_wrn_rule() -> None:
    from dnc.models import member_config

    widths = [member_config("wide_resnet28_10", None, 0.0, s)["width"] for s in (1, 2, 4)]
    assert widths == [10, 7, 5]


def test_bad_preset_override_leaves_params_untouched(tmp_path, capsys) -> None:
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    before = params.read_text()
    args = ["preset", "cifar10", "--params", str(params), "--presets-dir", str(ROOT / "presets")]
    assert main([*args, "--set", "train.epoch=3"]) == 2
    assert capsys.readouterr().err.strip() == "error: train.epoch: unknown key"
    assert params.read_text() == before
    assert yaml.safe_load(before)  # still valid


def test_tiny_preset_applies_and_is_the_tests_run(tmp_path, tiny_params) -> None:
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    args = ["preset", "tiny", "--params", str(params), "--presets-dir", str(ROOT / "presets")]
    assert main(args) == 0
    assert load_params(params) == tiny_params
