"""`dnc info` reports what training uses: each value checked against the training path
(the built model, the weight decay `fit` receives, the data training loads) and a
hand-computed number."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from dnc import builders, stages
from dnc.data import prepare_in_memory


@pytest.mark.parametrize(("divide", "member"), [(True, 0.2), (False, 0.4)])
def test_member_dropout_follows_divide_dropout(tiny_params, divide: bool, member: float):
    params = tiny_params.with_overrides(
        {"model.dropout": 0.4, "split.factor": 2, "split.divide_dropout": divide}
    )
    info = stages.info(params)
    assert [m["dropout"] for m in info["members"]] == [pytest.approx(member)] * 2
    model = builders.build_inference_model(params, 10, 1, 8)  # what training builds
    assert [m.head.dropout.p for m in model.members] == [pytest.approx(member)] * 2


@pytest.mark.parametrize(
    ("method", "rule", "expected"),
    [
        ("splitnet", "linear", 1e-3 / 4),
        ("splitnet", "none", 1e-3),
        ("cooperative", "linear", 1e-3),
    ],
)
def test_effective_weight_decay_is_what_fit_gets(
    tiny_params, monkeypatch, tmp_path: Path, method: str, rule: str, expected: float
):
    overrides = {"train.weight_decay": 1e-3, "split.factor": 4, "split.divide_weight_decay": rule}
    params = tiny_params.with_overrides({"method": method, **overrides})
    seen = {}

    def fake_fit(task, loaders, cfg, out_dir, **kwargs):
        seen["weight_decay"] = kwargs["weight_decay"]
        raise RuntimeError("stop before training")

    monkeypatch.setattr(stages, "fit", fake_fit)
    with pytest.raises(RuntimeError, match="stop before training"):
        stages.train(params, None, tmp_path / "run")
    info = stages.info(params)["weight_decay"]
    assert info == {"base": 1e-3, "rule": rule, "effective": pytest.approx(expected)}
    assert seen["weight_decay"] == pytest.approx(expected)


def test_imagefolder_counts_its_own_classes(tiny_params, tmp_path: Path):
    for split in ("train", "val"):
        for name in ("cat", "dog", "eel"):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (12, 12), (40 * i, 80, 120)).save(folder / f"{i}.png")
    params = tiny_params.with_overrides(
        {
            "data.dataset": "imagefolder",
            "data.root": str(tmp_path),
            "data.image_size": 16,
            "data.val_size": 3,
            "data.test_size": None,
        }
    )
    info = stages.info(params)
    data = prepare_in_memory(params.data)  # what training loads
    assert info["num_classes"] == data.info.num_classes == 3
    assert info["input_shape"] == [3, 16, 16] == list(data.train.images.shape[1:])
    with torch.device("meta"):
        model = builders.build_inference_model(params, 3, 3, 16)
    assert model.members[0].head.fc.out_features == 3
