from pathlib import Path

import pytest
import yaml

from dnc.config import ConfigError
from dnc.config_loading import load_params, params_from_dict, parse_set

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, tree: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


@pytest.fixture()
def tree() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_committed_params_load(default_params):
    assert default_params.data.dataset == "fashion_mnist"
    assert default_params.flat()["split.factor"] == default_params.split.factor


def test_unknown_key_named(tmp_path, tree):
    tree["train"]["learning_rate"] = 0.1
    with pytest.raises(ConfigError, match=r"^train\.learning_rate: unknown key"):
        load_params(write(tmp_path, tree))


def test_missing_key_named(tmp_path, tree):
    del tree["split"]["factor"]
    with pytest.raises(ConfigError, match=r"^split\.factor: missing key"):
        load_params(write(tmp_path, tree))


def test_wrong_type_named(tmp_path, tree):
    tree["train"]["epochs"] = "three"
    with pytest.raises(ConfigError, match=r"^train\.epochs: "):
        load_params(write(tmp_path, tree))


def test_out_of_range_named(tmp_path, tree):
    tree["split"]["factor"] = 0
    with pytest.raises(ConfigError, match=r"^split\.factor: .*greater than or equal to 1"):
        load_params(write(tmp_path, tree))


def test_cross_field_rule(tmp_path, tree):
    tree["train"]["min_lr"] = 1.0
    with pytest.raises(ConfigError, match=r"^train: .*min_lr"):
        load_params(write(tmp_path, tree))


def test_override_and_parse_set(tree, tmp_path):
    params = load_params(write(tmp_path, tree), parse_set(["split.factor=4", "model.width=null"]))
    assert params.split.factor == 4 and params.model.width is None
    with pytest.raises(ConfigError, match=r"^split\.nope: unknown key"):
        load_params(write(tmp_path, tree), {"split.nope": 1})
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        parse_set(["split.factor"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_method_sections_are_optional_and_validated_only_when_selected(tmp_path):
    from dnc.config_loading import read_tree

    tree = read_tree(ROOT / "params.yaml")
    tree = {k: v for k, v in tree.items() if k not in ("search", "compare")}
    assert "cooperative" not in tree  # params.yaml holds only the selected method's section
    tree["cooperative"] = {"temperature": -1.0}  # invalid, but not selected: ignored
    params = params_from_dict(tree)
    assert params.method == "splitnet" and "cooperative" not in params.model_dump()
    tree["method"] = "cooperative"
    with pytest.raises(ConfigError, match=r"^cooperative\.temperature: "):
        params_from_dict(tree)
    del tree["cooperative"]  # missing = the section's defaults
    assert params_from_dict(tree).method_config.peer_weight == 0.1
    assert params_from_dict(tree).flat()["cooperative.peer_weight"] == 0.1


def test_unknown_top_level_sections_fail_unless_declared(tmp_path):
    from dnc.config_loading import read_tree

    tree = {k: v for k, v in read_tree(ROOT / "params.yaml").items() if k != "search"}
    tree["tracking"] = {"uri": "x"}  # nobody owns it
    with pytest.raises(ConfigError, match=r"^tracking: unknown key"):
        params_from_dict(tree, extra_sections={"compare"})
    assert params_from_dict(tree, extra_sections={"compare", "tracking"}).method == "splitnet"
    with pytest.raises(ConfigError, match=r"^method: unknown method 'nope'"):
        params_from_dict({**tree, "method": "nope"}, extra_sections={"compare", "tracking"})
