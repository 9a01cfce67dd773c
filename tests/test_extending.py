"""docs/extending.md, executed as written: a toy model family and a toy method registered
from here, each trained and evaluated for one tiny epoch through dnc.stages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dnc import stages
from dnc.config import ConfigError
from dnc.methods import base as method_registry
from dnc.methods import get_method, list_methods
from dnc.models import get_spec, list_families, list_models, split_width
from dnc.models import registry as model_registry

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def doc_blocks() -> list[str]:
    """The ```python blocks of docs/extending.md, in order (family first, then method)."""
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture()
def extended(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the doc's code as modules `toy_family` and `plain`; registries restored after."""
    monkeypatch.setattr(model_registry, "_REGISTRY", dict(model_registry._REGISTRY))
    monkeypatch.setattr(model_registry, "_FAMILIES", dict(model_registry._FAMILIES))
    monkeypatch.setattr(method_registry, "_REGISTRY", dict(method_registry._REGISTRY))
    family, method = doc_blocks()
    for name, code in (("toy_family", family), ("plain", method)):
        exec(compile(code, str(DOC), "exec"), {"__name__": name})  # noqa: S102


def test_doc_registers_a_family_and_a_method(extended: None) -> None:
    assert "toy_family" in list_families()  # inferred from the module's name
    assert get_spec("toy_net").family == "toy_family"
    assert split_width("toy_net", 8, 4) == 4.0  # the family's own rule: 8 / sqrt(4)
    assert "plain" in list_methods() and get_method("plain").config is not None


def test_toy_family_trains_with_splitnet(extended: None, tiny_params, tmp_path: Path) -> None:
    params = tiny_params.with_overrides({"model.name": "toy_net", "train.epochs": 1})
    stages.train(params, None, tmp_path / "run")
    metrics = stages.evaluate(params, None, tmp_path / "run", tmp_path / "m.json")
    assert [row["label"] for row in metrics["curve"]] == [
        "splitnet k=1 of S=2",
        "splitnet k=2 of S=2",
    ]
    assert stages.info(params)["members"][0]["width"] == 6.0  # round(8 / sqrt(2))


def test_toy_method_trains_and_evaluates(extended: None, tiny_params, tmp_path: Path) -> None:
    params = tiny_params.with_overrides(
        {"method": "plain", "plain.ce_weight": 2.0, "train.epochs": 1}
    )
    assert params.method_config.ce_weight == 2.0
    result = stages.train(params, None, tmp_path / "run")
    assert "train/ce" in result.state.history[0]
    metrics = stages.evaluate(params, None, tmp_path / "run", tmp_path / "m.json")
    assert metrics["curve"][0]["method"] == "plain"
    assert metrics["config"]["ce_weight"] == 2.0 and metrics["config"]["method"] == "plain"
    assert stages.info(params)["plain"] == {"ce_weight": 2.0}
    assert get_method("plain").run_label(params) == "plain-small_cnn-digits"


def test_toy_method_section_defaults_and_errors(extended: None, tiny_params) -> None:
    assert tiny_params.with_overrides({"method": "plain"}).method_config.ce_weight == 1.0
    with pytest.raises(ConfigError, match=r"^plain\.nope: unknown key"):
        tiny_params.with_overrides({"method": "plain", "plain.nope": 1})
    with pytest.raises(ConfigError, match=r"^plain\.ce_weight: "):
        tiny_params.with_overrides({"method": "plain", "plain.ce_weight": 0})


def test_registries_are_restored_after_the_toys() -> None:
    assert "toy_net" not in list_models() and "plain" not in list_methods()
