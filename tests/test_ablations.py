"""Ablations: independent members (cot_weight 0), shared views, the multiview method; and the
per-example predictions plus calibration metrics every evaluation writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from dnc import stages
from dnc.cli import main
from dnc.config import DataConfig
from dnc.data import BatchViews, get_dataset_info, prepare_in_memory
from dnc.ensemble.splitnet import build_splitnet
from dnc.evaluation.predictions import predictions_path, read_predictions
from dnc.methods.splitnet import CoTrainingTask
from dnc.train.losses import cot_weight_at


def test_cot_weight_zero_is_zero_at_every_epoch_even_in_warmup():
    assert [cot_weight_at(e, 0.0, 1.0) for e in (0.0, 0.001, 0.5, 1.0, 5.0)] == [0.0] * 5
    assert cot_weight_at(0.0, 0.5, 1.0) == 0.005  # the floor still starts a real weight


def test_cot_weight_zero_loss_is_exactly_the_sum_of_cross_entropies():
    torch.manual_seed(0)
    net = build_splitnet("small_cnn", split=2, num_classes=10, in_chans=1, image_size=8, width=8)
    task = CoTrainingTask(net, cot_weight=0.0, cot_warmup_epochs=1.0)
    views, y = torch.randn(2, 6, 1, 8, 8), torch.randint(0, 10, (6,))
    out = task.training_step(views, y, epoch=0.0)  # inside the warm-up: the old floor hit here
    logits = net(views)
    oracle = F.cross_entropy(logits[0], y) + F.cross_entropy(logits[1], y)
    assert out["loss"].item() == oracle.item()
    assert out["cot_weight"].item() == 0.0 and out["js"].item() > 0  # measured, not trained


def _digits_cfg(**kw: object) -> DataConfig:
    fields = dict(dataset="digits", root=None, download=False, val_size=50, train_size=100,
                  test_size=50, image_size=None, augment="standard", random_erasing=0.5,
                  num_workers=0, split_seed=0, autoaugment=False, erasing_scale=[0.02, 0.33],
                  erasing_ratio=[0.3, 3.3])  # fmt: skip
    return DataConfig(**{**fields, **kw})


def test_shared_views_give_every_member_the_same_input():
    cfg, info = _digits_cfg(), get_dataset_info("digits")
    images = prepare_in_memory(cfg).train.images[:16]
    shared = BatchViews(info, cfg, 3, shared=True)(images, torch.Generator().manual_seed(1))
    assert shared.shape[0] == 3
    assert torch.equal(shared[0], shared[1]) and torch.equal(shared[0], shared[2])
    own = BatchViews(info, cfg, 3)(images, torch.Generator().manual_seed(1))
    assert not torch.equal(own[0], own[1])  # per_member: augmentations differ


@pytest.mark.parametrize(
    ("key", "value"), [("split.views", "sideways"), ("compare.baseline", "nope")]
)
def test_bad_ablation_keys_exit_2_naming_the_key(tmp_path, capsys, key, value):
    from pipelines.cli import main as pipelines_main

    root = Path(__file__).resolve().parents[1]
    if key == "split.views":
        code = main(["train", "--params", str(root / "params.yaml"), "--set",
                     f"{key}={value}", "--out", str(tmp_path / "run")])  # fmt: skip
    else:
        text = (root / "params.yaml").read_text()
        assert "  baseline: s1 " in text
        text = text.replace("  baseline: s1 ", f"  baseline: {value} ")
        (tmp_path / "params.yaml").write_text(text)
        code = pipelines_main(["stage", "train", "--params", str(tmp_path / "params.yaml"),
                               "--config", "s1", "--out", str(tmp_path / "run")])  # fmt: skip
    assert code == 2
    assert capsys.readouterr().err.startswith(f"error: {key}")
    assert not (tmp_path / "run").exists()


def test_multiview_trains_and_evaluates_with_predictions(tiny_params, tmp_path):
    params = tiny_params.with_overrides(
        {"method": "multiview", "train.epochs": 1, "multiview": {"width": "member"}}
    )
    model_dir, out = tmp_path / "run", tmp_path / "eval" / "run.json"
    stages.train(params, None, model_dir)
    metrics = stages.evaluate(params, None, model_dir, out)
    assert metrics["config"]["split_factor"] == 1 and metrics["config"]["views"] == 2
    assert len(metrics["members"]) == 1 and metrics["config"]["width"] < 8  # member width
    history = json.loads((model_dir / "history.json").read_text())
    assert "train/js" in history[0]  # the JSD among the views is in the loss
    preds = read_predictions(predictions_path(out))
    assert preds.labels.dtype == np.uint8 and preds.members.shape == (1, metrics["num_test"])
    acc = 100 * preds.correct().mean()
    assert acc == pytest.approx(metrics["ensemble"]["acc"], abs=1e-6)


def test_splitnet_evaluation_writes_calibration_diversity_and_predictions(tiny_params, tmp_path):
    params = tiny_params.with_overrides({"train.epochs": 1})
    model_dir, out = tmp_path / "run", tmp_path / "run.json"
    stages.train(params, None, model_dir)
    metrics = stages.evaluate(params, None, model_dir, out)
    ens, k1 = metrics["ensemble"], metrics["prefixes"][0]
    for row in (ens, k1, *metrics["members"]):
        assert 0 <= row["ece"] <= 1 and 0 <= row["brier"] <= 2
    assert k1["disagreement"] is None and 0 <= ens["disagreement"] <= 1
    assert 0 <= ens["mutual_info"] <= np.log(2) + 1e-9
    assert sum(ens["reliability"]["count"]) == metrics["num_test"]
    preds = read_predictions(predictions_path(out))
    assert preds.prefixes.shape == (2, metrics["num_test"])
    for i, m in enumerate(metrics["members"]):
        assert 100 * preds.correct(f"member_{i}").mean() == pytest.approx(m["acc"], abs=1e-6)
    assert np.array_equal(preds.prefixes[-1], preds.ensemble)
    assert json.loads(out.read_text())["ensemble"]["ece"] == ens["ece"]


def _sweep_row(tmp_path: Path, label: str, split: int, right: int) -> dict:
    """A sweep row (pipelines.prefect.flows.summary) whose run got the first `right` of 100
    test examples right."""
    from dnc.evaluation.predictions import write_predictions

    labels = np.arange(100) % 10
    pred = np.where(np.arange(100) < right, labels, (labels + 1) % 10)
    path = tmp_path / f"{label}.predictions.npz"
    write_predictions(path, labels, pred, pred[None], pred[None], 10)
    return {"label": label, "point": {"split.factor": split}, "split.factor": split,
            "ensemble_acc": float(right), "best_member_acc": float(right), "params": 10,
            "macs": 100, "seed": 0, "predictions": str(path)}  # fmt: skip


def test_sweep_comparison_names_a_winner_only_when_mcnemar_supports_it(tmp_path):
    from pipelines.prefect.report import comparison_table

    # 5 one-sided discordant examples: p = 2 / 32 = 0.0625 (no); 6: 0.03125 (yes).
    close = [_sweep_row(tmp_path, "s1", 1, 80), _sweep_row(tmp_path, "s2", 2, 85)]
    text = comparison_table(close)
    assert "| s2 | 1 |" in text and "**indistinguishable**" in text
    assert "No configuration is distinguishable from the baseline s1" in text
    far = [_sweep_row(tmp_path, "s1", 1, 80), _sweep_row(tmp_path, "s4", 4, 86)]
    text = comparison_table(far)
    assert "**better**" in text and "s4 is better than the baseline s1" in text
    assert "Best" not in text


def test_pipelines_compare_groups_seeds_and_tests_on_the_predictions_artifact(tmp_path):
    """`pipelines compare` on constructed runs: two configurations x two seeds, differing on
    exactly 3 + 3 examples (pooled p = 2 / 64 < 0.05) -> better; a bad --baseline names itself."""
    from dnc.config import ConfigError
    from pipelines.tracking.compare import verdict_section

    class Client:
        def download_artifacts(self, run_id: str, path: str, dst: str) -> str:
            return str(tmp_path / run_id)

    store = type("Store", (), {"client": Client()})()
    rows = []
    for name, s, macs, right in (("s1", "1", 200.0, 80), ("s2", "2", 200.0, 83)):
        for seed in (0, 1):
            (tmp_path / f"{name}{seed}").mkdir()  # the run's downloaded artifact folder
            row = _sweep_row(tmp_path / f"{name}{seed}", "run", int(s), right)
            rows.append({"run": f"{name}-seed{seed}", "run id": f"{name}{seed}", "S": s,
                         "method": "splitnet", "MACs": macs, "seed": seed,
                         "config": name, "predictions": row["predictions"]})  # fmt: skip
    text, judged = verdict_section(rows, store, None, tmp_path)
    assert judged["baseline"] == "s1" and judged["rows"]["s2"]["verdict"] == "better"
    assert judged["rows"]["s2"]["only_it"] == 6 and "s2 is better than the baseline s1" in text
    with pytest.raises(ConfigError, match="--baseline nope"):
        verdict_section(rows, store, "nope", tmp_path)


def test_search_space_takes_weight_decay_and_reports_the_best_per_split(default_params):
    from pipelines.search.report import best_per_split, per_split_table
    from pipelines.search.space import check_space, search_from_dict

    space = {"split.factor": {"choices": [1, 2]},
             "train.weight_decay": {"low": 1e-5, "high": 1e-2, "log": True},
             "split.divide_weight_decay": {"choices": ["none", "exp", "linear"]}}  # fmt: skip
    search = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    search = search_from_dict({**search["search"], "space": space})
    check_space(default_params, search)  # accepted: log range and choices
    rows = [
        {"trial": 0, "state": "COMPLETE", "val_acc": 80.0, "split.factor": 1,
         "train.weight_decay": 1e-3, "split.divide_weight_decay": "none"},
        {"trial": 1, "state": "COMPLETE", "val_acc": 82.0, "split.factor": 1,
         "train.weight_decay": 1e-4, "split.divide_weight_decay": "none"},
        {"trial": 2, "state": "COMPLETE", "val_acc": 81.0, "split.factor": 2,
         "train.weight_decay": 2e-3, "split.divide_weight_decay": "linear"},
        {"trial": 3, "state": "PRUNED", "val_acc": 99.0, "split.factor": 2,
         "train.weight_decay": 1e-5, "split.divide_weight_decay": "none"},
    ]  # fmt: skip
    best = best_per_split(rows, default_params)
    assert [(b["split.factor"], b["trial"]) for b in best] == [(1, 1), (2, 2)]
    assert best[1]["effective_weight_decay"] == pytest.approx(1e-3)  # linear: wd / S
    assert "Best weight decay per S" in per_split_table(best)
