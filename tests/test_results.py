"""The metrics JSON schema: what evaluate writes validates, and a broken file does not."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from dnc import stages
from dnc.evaluation.results import EvalResult


def test_evaluate_writes_the_schema(tiny_params, tmp_path):
    params = tiny_params.with_overrides({"train.epochs": 1})
    stages.train(params, None, tmp_path / "run")
    stages.evaluate(params, None, tmp_path / "run", tmp_path / "m.json")
    result = EvalResult.model_validate_json((tmp_path / "m.json").read_text())
    assert [p.k for p in result.prefixes] == [1, 2]
    assert result.curve[-1].macs == result.ensemble.macs == sum(m.macs for m in result.members)
    assert result.config.method == "splitnet" and result.selection.best_epoch == 0

    broken = json.loads((tmp_path / "m.json").read_text())
    broken["curve"][0].pop("macs")
    with pytest.raises(ValidationError, match="curve.0.macs"):
        EvalResult.model_validate(broken)
