import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dnc import stages
from dnc.cli import main
from dnc.models import list_models

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "dnc", *args], capture_output=True, text=True, env=env, cwd=ROOT
    )


def test_info_wrn28_10_cifar100_cli():
    proc = run_cli("info", "--model", "wide_resnet28_10", "--split", "4", "--dataset", "cifar100")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [m["width"] for m in out["members"]] == [5] * 4
    assert out["undivided"]["width"] == 10
    assert out["undivided"]["params"] == pytest.approx(36.5e6, rel=0.01)
    assert out["ensemble"]["params"] == pytest.approx(36.5e6, rel=0.02)
    assert out["undivided"]["macs"] == pytest.approx(5.25e9, rel=0.03)
    assert out["ensemble"]["macs"] == sum(m["macs"] for m in out["members"])


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("split", [1, 2, 4])
def test_info_every_model(default_params, name, split):
    overrides = {"model.name": name, "split.factor": split, "data.dataset": "cifar100"}
    out = stages.info(default_params.with_overrides(overrides))
    assert len(out["members"]) == split
    assert out["ensemble"]["params"] > 0 and out["ensemble"]["macs"] > 0
    if split == 1:
        assert out["members"][0]["params"] == out["undivided"]["params"]
    json.dumps(out)


def test_bad_key_exits_2_before_work(tmp_path):
    tree = yaml.safe_load((ROOT / "params.yaml").read_text())
    tree["split"]["factr"] = 2
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tree))
    proc = run_cli("train", "--params", str(path), "--out", str(tmp_path / "run"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: split.factr: unknown key"
    assert not (tmp_path / "run").exists()


def test_unknown_model_exits_2(tmp_path, capsys):
    code = main(
        [
            "train",
            "--params",
            str(ROOT / "params.yaml"),
            "--set",
            "model.name=vgg99",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert code == 2
    assert capsys.readouterr().err.startswith("error: model.name: unknown model 'vgg99'")


def test_train_then_evaluate(tiny_params, tmp_path, capsys):
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(tiny_params.model_dump(mode="json")))
    common = ["--params", str(params_path), "--set", "split.factor=3"]
    assert main(["prepare", *common, "--out", str(tmp_path / "data")]) == 0
    assert (
        main(["train", *common, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run")])
        == 0
    )
    assert (
        main(
            [
                "evaluate",
                *common,
                "--data",
                str(tmp_path / "data"),
                "--model-dir",
                str(tmp_path / "run"),
                "--out",
                str(tmp_path / "m.json"),
            ]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert [p["k"] for p in metrics["prefixes"]] == [1, 2, 3]
    assert len(metrics["members"]) == 3
    assert metrics["ensemble"]["acc"] == metrics["prefixes"][-1]["acc"]
    assert metrics["prefixes"][0]["acc"] == metrics["members"][0]["acc"]
    assert metrics["prefixes"][2]["macs"] == 3 * metrics["members"][0]["macs"]
    assert set(metrics["ensemble"]["acc_by_method"]) == {"logits", "softmax", "max"}
    assert metrics["ensemble"]["acc"] > 50  # digits: far above the 10 % chance level
    assert set(metrics["prefixes"][0]["latency_ms"]) == {"1", "8"}
    assert metrics["selection"]["selected_on"] == "val/ensemble/acc"
