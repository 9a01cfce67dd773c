import copy

import pytest
import torch

from dnc import builders, stages
from dnc.train import checkpoint
from dnc.train.engine import DivergenceError


class StopAfter:
    """Simulates a kill right after epoch `n`'s checkpoint was written."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_epoch_end(self, state, metrics):
        if state.epoch == self.n:
            raise KeyboardInterrupt


def weights(run_dir):
    return checkpoint.load(run_dir / checkpoint.LAST)["task_state"]


def test_fit_writes_checkpoints_and_history(tiny_params, tmp_path):
    result = stages.train(tiny_params, None, tmp_path / "run")
    history = result.state.history
    assert [h["epoch"] for h in history] == [0, 1]
    for key in (
        "train/loss",
        "train/ce_0",
        "train/ce_1",
        "train/js",
        "train/lr",
        "val/ensemble/acc",
        "val/member_0/acc",
        "val/member_1/acc",
    ):
        assert key in history[-1], key
    accs = [h["val/ensemble/acc"] for h in history]
    best = checkpoint.load(result.best_path)
    assert best["epoch"] == result.state.best_epoch == accs.index(max(accs))
    assert (tmp_path / "run" / "history.json").is_file()


def test_resume_is_exact(tiny_params, tmp_path):
    params = tiny_params.with_overrides({"train.epochs": 3})
    straight = stages.train(params, None, tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        stages.train(params, None, tmp_path / "b", callbacks=[StopAfter(0)])
    assert checkpoint.load(tmp_path / "b" / checkpoint.LAST)["state"]["epoch"] == 0
    resumed = stages.train(params, None, tmp_path / "b")
    assert resumed.resumed_from == 0
    assert (
        resumed.state.history[-1]["val/ensemble/acc"]
        == straight.state.history[-1]["val/ensemble/acc"]
    )
    assert resumed.state.history[-1]["train/loss"] == straight.state.history[-1]["train/loss"]
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_divergence_stops_at_once(tiny_params, tmp_path):
    params = tiny_params.with_overrides(
        {"train.lr": 1e12, "train.min_lr": 1e12, "train.warmup_epochs": 0}
    )
    with pytest.raises(DivergenceError, match="loss is"):
        stages.train(params, None, tmp_path / "run")
    assert not (tmp_path / "run" / checkpoint.LAST).exists()


def test_split_one_has_no_cotraining_term(tiny_params, tmp_path):
    params = tiny_params.with_overrides({"split.factor": 1, "train.epochs": 1})
    result = stages.train(params, None, tmp_path / "run")
    assert "train/js" not in result.state.history[-1]
    assert "val/member_1/acc" not in result.state.history[-1]


def test_channels_last_run_loads_and_predicts_as_an_nchw_model(tiny_params, tmp_path):
    # train.channels_last runs the convolutions NHWC on CPU as on CUDA: a speed choice.
    # Its checkpoint holds NHWC tensors and must load into a plain NCHW model that predicts
    # what the NHWC model predicts.
    params = tiny_params.with_overrides({"train.channels_last": True})
    result = stages.train(params, None, tmp_path / "run")
    state = checkpoint.load(result.best_path)["model_state"]
    assert any(
        t.dim() == 4
        and not t.is_contiguous()
        and t.is_contiguous(memory_format=torch.channels_last)
        for t in state.values()
    )
    model, _ = builders.load_model(params, tmp_path / "run", 10, 1, 8)
    assert all(p.is_contiguous() for p in model.parameters())
    nhwc = copy.deepcopy(model).to(memory_format=torch.channels_last).eval()
    x = torch.rand(16, 1, 8, 8)
    torch.testing.assert_close(model.eval().predict(x, 2), nhwc.predict(x, 2))
    assert result.state.history[-1]["val/ensemble/acc"] > 30  # digits: chance is 10 %
