"""The report stage and the shared plots, on hand-made runs in the evaluate/train formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import lazy
from scipy import stats

from dnc.evaluation.predictions import write_predictions
from pipelines.cli import main
from pipelines.dvc.report import report
from pipelines.dvc.report_summary import mean_std

PNG = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[1]
plots = lazy("pipelines.dvc.plots")  # matplotlib: out of every worker's collection


def _run_files(tmp: Path, config: str, seed: int, split: int, acc: float) -> None:
    """One run's metrics JSON, history.json and params.json as the stages write them."""
    member_macs = 1_000_000 // split
    curve = [
        {"method": "splitnet", "label": f"k={k}", "macs": k * member_macs, "params": k * 10,
         "acc": acc - (split - k)}
        for k in range(1, split + 1)
    ]  # fmt: skip
    metrics = {
        "ensemble": {"acc": acc, "nll": 0.3, "params": 10 * split, "macs": split * member_macs,
                     "latency_ms": {"1": 1.0 * split, "100": 5.0 * split},
                     "reliability": {"edges": [0, 0.5, 1], "count": [100, 900],
                                     "confidence": [0.4, 0.9], "accuracy": [0.3, 0.95]}},
        "members": [{"index": i, "acc": acc - 2} for i in range(split)],
        "curve": curve,
        "config": {"method": "splitnet", "split_factor": split, "width": 32 / split**0.5},
        "selection": {"best_epoch": 1},
        "num_test": 1000,
    }  # fmt: skip
    (tmp / "evaluate" / config).mkdir(parents=True, exist_ok=True)
    (tmp / "evaluate" / config / f"seed{seed}.json").write_text(json.dumps(metrics))
    # Per-example predictions: the first round(acc * 10) of 1000 examples right, the rest
    # wrong, so two runs differ on exactly the examples between their two counts.
    labels = np.arange(1000) % 10
    right = round(acc * 10)
    pred = np.where(np.arange(1000) < right, labels, (labels + 1) % 10)
    write_predictions(tmp / "evaluate" / config / f"seed{seed}.predictions.npz", labels, pred,
                      np.stack([pred] * split), np.stack([pred] * split), 10)  # fmt: skip
    run_dir = tmp / "models" / config / f"seed{seed}"
    run_dir.mkdir(parents=True)
    history = [
        {"epoch": e, "train/loss": 2.0 - e, "val/ensemble/acc": acc - 5 + 5 * e,
         **{f"val/member_{i}/acc": acc - 7 + 5 * e for i in range(split)},
         **{f"val/member_{i}/nll": 0.5 for i in range(split)}}
        for e in range(2)
    ]  # fmt: skip
    (run_dir / "history.json").write_text(json.dumps(history))
    params = {
        "data": {"dataset": "digits", "train_size": None},
        "model": {"name": "small_cnn", "width": 32},
        "train": {"epochs": 2},
    }
    (run_dir / "params.json").write_text(json.dumps(params))


@pytest.fixture()
def runs(tmp_path: Path) -> Path:
    """A params.yaml with two configurations x two seeds, and their run files."""
    tree = yaml.safe_load((ROOT / "params.yaml").read_text())
    tree["compare"] = {"seeds": [0, 1], "configs": {"one": {"split.factor": 1}, "four": {
        "split.factor": 4}}, "baseline": "one"}  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    for seed, accs in ((0, (90.0, 92.0)), (1, (91.0, 95.0))):
        _run_files(tmp_path, "one", seed, 1, accs[0])
        _run_files(tmp_path, "four", seed, 4, accs[1])
    return tmp_path


def test_report_writes_table_summary_plots_and_curves(runs: Path) -> None:
    out = runs / "reports"
    summary = report(runs / "params.yaml", runs / "evaluate", runs / "models", out)
    assert summary["four"]["acc_mean"] == pytest.approx(93.5)
    assert summary["four"]["acc_std"] == pytest.approx(mean_std([92.0, 95.0])[1])
    assert summary["four"]["split_factor"] == 4 and summary["four"]["width"] == 32
    assert [row["acc_mean"] for row in summary["four"]["curve"]] == pytest.approx(
        [90.5, 91.5, 92.5, 93.5]
    )
    table = (out / "report.md").read_text()
    half = stats.t.ppf(0.975, 1) * mean_std([92.0, 95.0])[1] / 2**0.5  # t CI, 1 dof
    assert "| four | 4 | 32 (16) |" in table
    assert f"**93.50 [{93.5 - half:.2f}, {93.5 + half:.2f}]**" in table
    assert "seeds [0, 1] (n=2)" in table and "Best test accuracy" not in table
    # four is right on 20 + 40 examples the baseline gets wrong, never the reverse.
    assert summary["verdicts"]["rows"]["four"]["only_it"] == 60
    assert summary["verdicts"]["rows"]["four"]["verdict"] == "better"
    assert "four is better than the baseline one" in table
    assert json.loads((out / "report" / "summary.json").read_text()) == summary
    for name in ("accuracy_vs_macs", "learning_curves", "train_loss", "reliability"):
        assert (out / "report" / "plots" / f"{name}.png").read_bytes().startswith(PNG)
    curve = json.loads((out / "report" / "curves" / "four.json").read_text())
    assert [row["epoch"] for row in curve] == [1.0, 2.0]
    assert curve[1]["val_ensemble_acc"] == pytest.approx(93.5)
    assert not list(out.rglob(".*"))  # no temp files left behind


def test_report_is_deterministic(runs: Path) -> None:
    """Same inputs, same bytes: DVC must not see a change on a re-run."""
    first = report(runs / "params.yaml", runs / "evaluate", runs / "models", runs / "a")
    second = report(runs / "params.yaml", runs / "evaluate", runs / "models", runs / "b")
    assert first == second
    for path in (runs / "a").rglob("*"):
        if path.is_file():
            assert path.read_bytes() == (runs / "b" / path.relative_to(runs / "a")).read_bytes()


def test_missing_run_fails_before_writing(runs: Path, capsys) -> None:
    (runs / "evaluate" / "four" / "seed1.json").unlink()
    args = ["report", "--params", str(runs / "params.yaml"), "--metrics", str(runs / "evaluate")]
    code = main([*args, "--models", str(runs / "models"), "--out", str(runs / "out")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "seed1.json" in err and "\n" not in err
    assert not (runs / "out").exists()


@pytest.mark.parametrize(("k0", "k1", "verdict"), [(3, 3, "better"), (3, 2, "indistinguishable")])
def test_verdict_of_configs_that_differ_on_exactly_k_examples(tmp_path, k0, k1, verdict):
    """Pooled McNemar on k0 + k1 one-sided discordant examples: p = 2 * 0.5 ** (k0 + k1)."""
    tree = yaml.safe_load((ROOT / "params.yaml").read_text())
    tree["compare"] = {"seeds": [0, 1], "configs": {"s1": {"split.factor": 1}, "s2": {}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))  # baseline: default s1
    for seed, k in ((0, k0), (1, k1)):
        _run_files(tmp_path, "s1", seed, 1, 80.0)
        _run_files(tmp_path, "s2", seed, 2, 80.0 + k / 10)
    summary = report(tmp_path / "params.yaml", tmp_path / "evaluate", tmp_path / "models",
                     tmp_path / "out")  # fmt: skip
    row = summary["verdicts"]["rows"]["s2"]
    assert (row["only_it"], row["only_baseline"]) == (k0 + k1, 0)
    assert row["mcnemar_p"] == pytest.approx(2 * 0.5 ** (k0 + k1))
    assert row["verdict"] == verdict
    text = (tmp_path / "out" / "report.md").read_text()
    if verdict == "better":
        assert "s2 is better than the baseline s1" in text
    else:
        assert "No configuration is distinguishable from the baseline s1" in text


def test_accuracy_vs_macs_general_rows(tmp_path: Path) -> None:
    rows = [
        {"label": "a", "macs": 1e6, "acc": 80.0},  # a lone point
        {"label": "k=1", "macs": 2e6, "acc": 81.0, "acc_std": 0.5, "curve": "S=2"},
        {"label": "k=2", "macs": 4e6, "acc": 83.0, "acc_std": 0.4, "curve": "S=2"},
    ]
    out = plots.accuracy_vs_macs(rows, tmp_path / "sub" / "p.png", "title")
    assert out == tmp_path / "sub" / "p.png" and out.read_bytes().startswith(PNG)
    with pytest.raises(ValueError):
        plots.accuracy_vs_macs([], tmp_path / "empty.png", "none")


def test_failed_plot_leaves_no_file(tmp_path: Path, monkeypatch) -> None:
    from matplotlib.figure import Figure

    def broken(self, *args, **kwargs):
        Path(args[0]).write_bytes(b"half")  # a partial write, then the failure
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(OSError):
        plots.line_panels({"p": {"s": ([1, 2], [3, 4], None)}}, tmp_path / "x.png", "t", "x", "y")
    assert list(tmp_path.iterdir()) == []
