"""The `compare` section: what the DVC matrix runs, and how a configuration overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dnc.config import ConfigError
from pipelines.cli import main
from pipelines.dvc.matrix import config_overrides, load_comparison, parse_comparison

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def tree() -> dict:
    """The committed params.yaml as a dict."""
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_committed_comparison_is_valid() -> None:
    comparison = load_comparison(ROOT / "params.yaml")
    assert len(comparison.seeds) >= 1
    factors = {c.get("split.factor") for c in comparison.configs.values()}
    assert {1, 4} <= factors  # S=2 is the base sections' own factor
    assert len(comparison.runs()) == len(comparison.configs) * len(comparison.seeds)


@pytest.mark.parametrize(
    ("configs", "seeds", "message"),
    [
        ({"s2": {"split.factr": 2}}, [0], "compare.configs.s2: split.factr: unknown key"),
        ({"s2": {"split.factor": 0}}, [0], "compare.configs.s2: split.factor:"),
        ({"s2": {"data.train_size": 5}}, [0], "compare.configs.s2.data.train_size: prepared"),
        ({"s2": {"seed": 3}}, [0], "compare.configs.s2.seed: set by compare.seeds"),
        ({"s-2": {}}, [0], "compare.configs.s-2: name"),
        ({"s2": None}, [0], "compare.configs.s2: expected a mapping"),
        ({"s2": {}}, [], "compare.seeds:"),
        ({"s2": {}}, [0, 0], "compare.seeds:"),
        ({}, [0], "compare.configs:"),
    ],
)
def test_bad_comparison_names_the_key(tree, configs, seeds, message) -> None:
    tree["compare"] = {"configs": configs, "seeds": seeds}
    with pytest.raises(ConfigError, match="^" + message.replace(".", r"\.")):
        parse_comparison(tree)


def test_config_overrides_then_set(tmp_path, tree) -> None:
    tree["compare"] = {"configs": {"a": {}, "b": {"split.factor": 4, "data.augment": "none"}},
                       "seeds": [0]}  # fmt: skip
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tree))
    assert config_overrides(path, "b") == {"split.factor": 4, "data.augment": "none"}
    assert config_overrides(path, None) == {}
    with pytest.raises(ConfigError, match="compare.configs.c: unknown configuration"):
        config_overrides(path, "c")


def test_stage_cli_rejects_a_broken_comparison_before_compute(tmp_path, tree, capsys) -> None:
    tree["compare"]["configs"]["bad"] = {"train.epochz": 1}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tree))
    out = tmp_path / "prepared"
    assert main(["stage", "prepare", "--params", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: compare.configs.bad: train.epochz: unknown key"
    assert not out.exists()


def test_the_baseline_is_the_undivided_net_of_a_dividing_method_at_the_base_width(tree) -> None:
    narrow = {"split.factor": 1, "model.width": 4}  # params.yaml: the model's own width
    assert tree["model"]["width"] is None
    # Cooperative and auxiliary runs at S = 1 and the base width are not the undivided
    # network; the narrower S = 1 is not at equal budget.
    others = {
        "coop": {"method": "cooperative", "split.factor": 1},
        "aux": {"method": "auxiliary", "split.factor": 1},
        "s1_narrow": narrow,
        "s2": {"split.factor": 2},
    }
    tree["compare"] = {"seeds": [0], "configs": {**others, "s1": {"split.factor": 1}}}
    assert parse_comparison(tree).baseline == "s1"
    tree["compare"] = {"seeds": [0], "configs": others}
    assert parse_comparison(tree).baseline is None
