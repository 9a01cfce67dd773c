import json
from pathlib import Path

import pytest
import yaml
from conftest import deep_variant, every_model_and_split

from dnc import stages
from dnc.cli import main
from dnc.models import get_spec

ROOT = Path(__file__).resolve().parents[1]


def test_info_wrn28_10_cifar100_cli(capsys):
    # In this process: `python -m dnc` itself runs under torchrun (tests/test_distributed.py).
    argv = ["info", "--model", "wide_resnet28_10", "--split", "4", "--dataset", "cifar100"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert [m["width"] for m in out["members"]] == [5] * 4
    assert out["undivided"]["width"] == 10
    assert out["undivided"]["params"] == pytest.approx(36.5e6, rel=0.01)
    assert out["ensemble"]["params"] == pytest.approx(36.5e6, rel=0.02)
    assert out["undivided"]["macs"] == pytest.approx(5.25e9, rel=0.03)
    assert out["ensemble"]["macs"] == sum(m["macs"] for m in out["members"])


def _heavy_info(name: str) -> bool:
    """Deep variants, and the reference-style twins of covered preact nets (PyramidNet: ~10-30
    s of FLOP counting each) but the tiny PyramidNet-20: e2e tier."""
    twin = get_spec(name).style == "reference" and name != "pyramidnet20"
    return twin or deep_variant(name)


@pytest.mark.parametrize(("name", "split"), every_model_and_split((1, 2, 4), _heavy_info))
def test_info_every_model(default_params, name, split):
    overrides = {"model.name": name, "split.factor": split, "data.dataset": "cifar100"}
    overrides["model.style"] = get_spec(name).style  # a reference variant is built as one
    out = stages.info(default_params.with_overrides(overrides))
    assert len(out["members"]) == split
    assert out["ensemble"]["params"] > 0 and out["ensemble"]["macs"] > 0
    if split == 1:
        assert out["members"][0]["params"] == out["undivided"]["params"]
    json.dumps(out)


@pytest.mark.integration
def test_bad_key_exits_2_before_work(tmp_path, capsys):
    tree = yaml.safe_load((ROOT / "params.yaml").read_text())
    tree["split"]["factr"] = 2
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tree))
    assert main(["train", "--params", str(path), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip() == "error: split.factr: unknown key"
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


def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["train", "--params", str(tmp_path / "nope.yaml"), "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"error: {tmp_path / 'nope.yaml'}: params file not found"]
    assert main(["info", "--set", "split.nope=1"]) == 2
    assert capsys.readouterr().err.startswith("error: split.nope: unknown key")


def test_verbose_and_dnc_debug_print_the_traceback(tmp_path, capsys, monkeypatch):
    args = ["evaluate", "--model-dir", str(tmp_path), "--out", str(tmp_path / "m.json")]
    monkeypatch.setattr("sys.argv", ["dnc"])
    bad = tmp_path / "best.pt"
    bad.write_bytes(b"not a checkpoint")
    tiny = [*args, "--set", "data.dataset=digits", "--set", "data.val_size=100"]
    assert main(["-v", *tiny]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and f"error: {bad}: not a readable checkpoint" in err
    monkeypatch.setenv("DNC_DEBUG", "1")
    assert main(tiny) == 2
    assert "Traceback" in capsys.readouterr().err


def test_bugs_keep_their_traceback(monkeypatch):
    from dnc import stages as st

    monkeypatch.setattr(st, "info", lambda params: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["info"])


def _help(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0, command
    return capsys.readouterr().out


def test_every_help_shows_defaults(capsys):
    # In-process (argparse prints and exits 0); test_info_wrn28_10_cifar100_cli runs the
    # real `python -m dnc` entry point.
    for command in ("info", "prepare", "train", "evaluate"):
        assert "(default: params.yaml)" in _help(command, capsys), command
    assert "(default: data/prepared)" in _help("prepare", capsys)
