"""Method selection: every method's evaluation ends in the same accuracy-vs-MACs curve."""

import json

import torch

from dnc.cli import main
from dnc.ensemble.splitnet import build_splitnet
from dnc.evaluation.evaluate import curve_rows, evaluate_splitnet


def test_splitnet_evaluation_has_the_uniform_curve():
    torch.manual_seed(0)
    net = build_splitnet("small_cnn", split=2, num_classes=10, in_chans=1, image_size=8, width=4)
    batches = [(torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,)))]
    metrics = evaluate_splitnet(net, batches, (1, 8, 8), torch.device("cpu"), [1], 1)
    assert [row["label"] for row in metrics["curve"]] == [
        "splitnet k=1 of S=2",
        "splitnet k=2 of S=2",
    ]
    for row, prefix in zip(metrics["curve"], metrics["prefixes"], strict=True):
        assert row["method"] == "splitnet"
        assert (row["macs"], row["params"], row["acc"]) == (
            prefix["macs"],
            prefix["params"],
            prefix["acc"],
        )
    assert curve_rows(metrics["prefixes"][:1], "auxiliary", "compact")[0]["label"] == "compact"


def test_info_cli_shows_the_method_extras(capsys):
    assert main(["info", "--set", "method=cooperative", "--set", "data.dataset=digits"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "cooperative"
    assert [d["name"] for d in out["cooperative"]["depths"]] == ["d1", "d2", "full"]
    assert main(["info", "--set", "method=auxiliary"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["auxiliary"]["training_params"] > out["auxiliary"]["compact_params"]


def test_bad_depth_exits_2_with_the_key(capsys):
    code = main(["info", "--set", "method=cooperative", "--set", "cooperative.depths.d1=[9]"])
    assert code == 2
    assert "cooperative.depths.d1: block 9 does not exist" in capsys.readouterr().err
