"""`python -m pipelines sweep --compare`: the compare section through the Prefect sweep, into
the DVC layout, compared by the DVC report's own code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, TINY, lazy
from test_flows import _client, task_states

from dnc.config import ConfigError
from dnc.evaluation.predictions import predictions_path
from pipelines.cli import main
from pipelines.dvc import matrix
from pipelines.dvc.preset import apply_preset
from pipelines.dvc.report import print_verdicts

flows, points = lazy("pipelines.prefect.flows"), lazy("pipelines.prefect.points")

COMPARE = {
    "compare.seeds": [0, 1],
    "compare.baseline": "s1",
    "compare.configs": {"s1": {"split.factor": 1}, "s2": {}},
}


@pytest.fixture()
def compare_params(tmp_path) -> Path:
    """params.yaml with presets/tiny.yaml (300 training images) and a 2 x 2 comparison."""
    path = tmp_path / "params.yaml"
    shutil.copyfile(ROOT / "params.yaml", path)
    apply_preset(path, {**TINY, "data.train_size": 300, **COMPARE})
    return path


def test_comparison_points_merge_config_overrides_then_seed(compare_params):
    runs = points.expand_comparison(str(compare_params), {"train.epochs": 1})
    assert [(r.config, r.seed) for r in runs] == [("s1", 0), ("s1", 1), ("s2", 0), ("s2", 1)]
    assert runs[1].point == {"split.factor": 1, "seed": 1}
    assert [r.params.split.factor for r in runs] == [1, 1, 2, 2]
    assert {r.params.train.epochs for r in runs} == {1}
    sweep = Path("sweep")
    assert runs[1].model_dir(sweep) == sweep / "models" / "s1" / "seed1"
    assert runs[1].metrics_path(sweep) == sweep / "evaluate" / "s1" / "seed1.json"
    with pytest.raises(ConfigError, match=r"^seed: set by the params file's compare section"):
        points.expand_comparison(str(compare_params), {"seed": 3})
    with pytest.raises(ConfigError, match=r"^split\.factor: "):
        points.expand_comparison(str(compare_params), {"split.factor": 0})


def test_compare_flow_refuses_a_grid_before_any_task(compare_params):
    with pytest.raises(ConfigError, match=r"^compare: not with a grid"):
        flows.sweep_flow.fn(
            params_path=str(compare_params), grid={"split.factor": [1, 2]}, compare=True
        )


@pytest.fixture()
def no_compare_params(tmp_path) -> Path:
    tree = matrix.read_tree(ROOT / "params.yaml")
    del tree[matrix.SECTION]
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


@pytest.mark.parametrize(
    ("extra", "line"),
    [
        (["--grid", "split.factor=[1, 2]"], "error: --compare: not with --grid"),
        (["--params", "NO_COMPARE"], "error: compare: missing key"),
    ],
)
def test_cli_compare_errors_are_one_line_exit_2_before_training(
    extra, line, no_compare_params, tmp_path, capsys, monkeypatch
):
    monkeypatch.delenv("DNC_DEBUG", raising=False)
    extra = [str(no_compare_params) if a == "NO_COMPARE" else a for a in extra]
    out, store = tmp_path / "out", tmp_path / "store"
    argv = ["sweep", "--compare", *extra, "--out-dir", str(out), "--data-store", str(store)]
    assert main(argv) == 2  # a unit test: had Prefect or a training started, it would fail
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(line), err
    assert not out.exists() and not store.exists()


@pytest.mark.slow
def test_compare_sweep_writes_the_dvc_layout_and_the_dvc_report(
    prefect_server, compare_params, tmp_path, capsys
):
    sweep = tmp_path / "sweep"
    state = flows.sweep_flow(
        params_path=str(compare_params),
        overrides={"train.epochs": 1},
        compare=True,
        out_dir=str(sweep),
        data_store=str(tmp_path / "store"),
        return_state=True,
    )
    assert state.is_completed(), state.message
    rows = state.result()
    runs = [("s1", 0), ("s1", 1), ("s2", 0), ("s2", 1)]
    assert [(r["config"], r["seed"]) for r in rows] == runs
    for config, seed in runs:
        run_dir = matrix.model_dir(sweep / "models", config, seed)
        assert {"best.pt", "last.pt", "history.json", "params.json"} <= set(os.listdir(run_dir))
        trained = json.loads((run_dir / "params.json").read_text())
        assert (trained["seed"], trained["train"]["epochs"]) == (seed, 1)
        assert trained["split"]["factor"] == (1 if config == "s1" else 2)
        metrics = matrix.metrics_path(sweep / "evaluate", config, seed)
        assert metrics.is_file() and predictions_path(metrics).is_file()

    # An independent second call of the report CLI on the sweep's outputs.
    again = tmp_path / "again"
    cmd = [sys.executable, "-m", "pipelines", "report", "--params", str(compare_params)]
    cmd += ["--metrics", str(sweep / "evaluate"), "--models", str(sweep / "models")]
    cmd += ["--out", str(again)]
    env = {**os.environ, "DNC_TRACKING": "off"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    ours, theirs = (sweep / "report.md").read_text(), (again / "report.md").read_text()
    table = ours.split("## Against the baseline")[1].split("## Budget plan")[0]
    assert "Baseline **s1**" in table and "| s2 | 2 |" in table
    assert table == theirs.split("## Against the baseline")[1].split("## Budget plan")[0]
    assert ours == theirs
    # What `sweep --compare` prints after its rows: the report CLI's own lines.
    capsys.readouterr()
    summary = json.loads((sweep / "report" / "summary.json").read_text())
    print_verdicts(summary, again / "report.md")
    assert capsys.readouterr().out == proc.stdout

    flow_run_id = state.state_details.flow_run_id
    states = task_states(flow_run_id)
    assert states["prepare"] == ["Completed"]  # s1 and s2 share the data: prepared once
    assert states["train"] == ["Completed"] * 4 and states["compare"] == ["Completed"]
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with _client() as client:
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    by_key = {a.key: a for a in artifacts}
    assert by_key["dnc-sweep"].data == ours
    assert (sweep / "report.md").absolute().as_uri() in by_key["dnc-sweep-report"].data
