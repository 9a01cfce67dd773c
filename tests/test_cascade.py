"""The confidence cascade: its two ends are known models, its cost lies between them, the
batched forward matches the per-tau outcomes, and the budget's tau comes from validation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dnc.evaluation.cascade import (
    CascadeModel,
    cascade_outcomes,
    confidence,
    run_cascade,
    select_tau,
)
from dnc.train.losses import ensemble_log_probs


def _logits(m: int = 4, n: int = 300, c: int = 5, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, c, (n,), generator=g)
    signal = F.one_hot(labels, c).float() * 2.0
    logits = torch.randn(m, n, c, generator=g) * 2.0 + signal  # members that often agree
    return logits, labels


def _acc(log_p: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * (log_p.argmax(-1) == labels).float().mean().item()


@pytest.mark.parametrize("how", ["logits", "softmax", "max"])
@pytest.mark.parametrize("gate", ["maxprob", "margin", "entropy"])
def test_ends_are_member_one_and_the_full_ensemble(how: str, gate: str) -> None:
    logits, labels = _logits()
    macs = [10, 10, 10, 10]
    first, full = cascade_outcomes(logits, labels, macs, how, taus=(0.0, 1.01), gate=gate)
    # oracle: member 1 on its own, and the ensemble rule over all members (hand-combined)
    assert first["acc"] == pytest.approx(_acc(F.log_softmax(logits[0], -1), labels))
    assert first["macs"] == 10 and first["exit_share"][0] == 1.0
    assert full["acc"] == pytest.approx(_acc(ensemble_log_probs(logits, how), labels))
    assert full["nll"] == pytest.approx(F.nll_loss(ensemble_log_probs(logits, how), labels).item())
    assert full["macs"] == 40 and full["exit_share"][-1] == 1.0


def test_mean_macs_lie_between_one_member_and_all_and_grow_with_tau() -> None:
    logits, labels = _logits()
    macs = [7, 11, 13, 17]
    rows = cascade_outcomes(logits, labels, macs, "logits", taus=(0.0, 0.6, 0.8, 0.9, 0.99))
    spent = [r["macs"] for r in rows]
    assert all(7 <= s <= 48 for s in spent)
    assert spent == sorted(spent)
    # mean MACs from the exit shares, computed by hand: share_k * (m_1 + ... + m_k)
    cumulative = [7, 18, 31, 48]
    for r in rows:
        by_hand = sum(p * c for p, c in zip(r["exit_share"], cumulative, strict=True))
        assert r["macs"] == pytest.approx(by_hand)
        assert sum(r["exit_share"]) == pytest.approx(1.0)


def test_gates_against_closed_forms() -> None:
    p = torch.tensor([[0.5, 0.3, 0.2], [1 / 3, 1 / 3, 1 / 3]])
    log_p = p.log()
    assert confidence(log_p, "maxprob").tolist() == pytest.approx([0.5, 1 / 3])
    assert confidence(log_p, "margin").tolist() == pytest.approx([0.2, 0.0], abs=1e-6)
    h = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2))
    expected = [1 - h / math.log(3), 0.0]
    assert confidence(log_p, "entropy").tolist() == pytest.approx(expected, abs=1e-6)


class _Fixed(nn.Module):
    """A 'member' that returns stored logits for image index x[:, 0] (and counts rows)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.table = logits
        self.rows_seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows_seen += x.shape[0]
        return self.table[x[:, 0].long()]


@pytest.mark.parametrize("tau", [0.0, 0.7, 0.9, 1.01])
def test_batched_cascade_matches_outcomes_and_runs_only_undecided_rows(tau: float) -> None:
    logits, labels = _logits(n=200)
    stages = [_Fixed(z) for z in logits]
    x = torch.arange(200).float().unsqueeze(1)  # image i is its own index
    log_p, stop = run_cascade(stages, x, tau, "softmax")
    (row,) = cascade_outcomes(logits, labels, [1, 1, 1, 1], "softmax", taus=(tau,))
    assert _acc(log_p, labels) == pytest.approx(row["acc"])
    shares = torch.bincount(stop, minlength=4).double() / 200
    assert shares.tolist() == pytest.approx(row["exit_share"])
    # stage k saw exactly the rows that had not stopped before it
    for k, stage in enumerate(stages):
        assert stage.rows_seen == int((stop >= k).sum())
    model = CascadeModel(stages, tau, "softmax")
    assert torch.allclose(model(x), log_p)


def test_last_combine_answers_with_the_latest_stage() -> None:
    logits, labels = _logits(m=3)
    (full,) = cascade_outcomes(logits, labels, [1, 2, 3], "last", taus=(1.01,))
    assert full["acc"] == pytest.approx(_acc(F.log_softmax(logits[-1], -1), labels))


def test_budget_tau_comes_from_validation_rows() -> None:
    # constructed so that val and test disagree: the best test tau would break the budget
    val = [
        {"tau": 0.0, "acc": 80.0, "macs": 10.0},
        {"tau": 0.9, "acc": 85.0, "macs": 19.0},
        {"tau": 0.99, "acc": 90.0, "macs": 25.0},
    ]
    assert select_tau(val, 20)["tau"] == 0.9
    assert select_tau(val, 100)["tau"] == 0.99
    with pytest.raises(ValueError, match="eval.cascade_budget_macs"):
        select_tau(val, 5)


def test_evaluate_writes_the_cascade_beside_the_prefixes(tiny_params, tmp_path) -> None:
    from dnc import stages
    from dnc.evaluation.results import EvalResult

    params = tiny_params.with_overrides({"train.epochs": 1})
    stages.train(params, None, tmp_path / "run")
    member = stages.info(params)["members"][0]["macs"]
    budgeted = params.with_overrides({"eval.cascade_budget_macs": int(1.5 * member)})
    stages.evaluate(budgeted, None, tmp_path / "run", tmp_path / "m.json")
    result = EvalResult.model_validate_json((tmp_path / "m.json").read_text())
    points = {p.tau: p for p in result.cascade.points}
    assert points[0.0].acc == pytest.approx(result.members[0].acc)
    assert points[1.01].acc == pytest.approx(result.ensemble.acc)
    assert points[1.01].macs == result.ensemble.macs
    assert set(points[0.9].latency_ms) == {"1", "8"}
    budget = result.cascade.budget
    assert budget.selected_on == "val" and budget.val_macs <= 1.5 * member
    assert budget.test_acc == points[budget.tau].acc


def test_cascade_on_the_members_logits_is_the_cascade_run_afresh() -> None:
    """dnc evaluate hands the cascade the members' test logits it already has: the curve
    must be the one the cascade gets by running its stages itself."""
    from dnc.config import EvalConfig
    from dnc.ensemble.splitnet import build_splitnet
    from dnc.evaluation.cascade import evaluate_cascade
    from dnc.evaluation.evaluate import evaluate_splitnet

    torch.manual_seed(0)
    net = build_splitnet("small_cnn", split=3, num_classes=5, in_chans=1, image_size=8, width=6)
    net.eval()
    batches = [(torch.randn(20, 1, 8, 8), torch.randint(0, 5, (20,))) for _ in range(2)]
    cpu, cfg = (
        torch.device("cpu"),
        EvalConfig(batch_size=8, latency_batch_sizes=[1], latency_repeats=1),
    )
    given = evaluate_splitnet(net, batches, (1, 8, 8), cpu, [1], 1)["member_logits"]
    stages = [(f"member_{i}", m) for i, m in enumerate(net.members)]
    args = (stages, net.ensemble, (batches, batches), (1, 8, 8), cpu, cfg)
    reused, afresh = evaluate_cascade(*args, test_logits=given), evaluate_cascade(*args)
    strip = [{k: v for k, v in p.items() if k != "latency_ms"} for p in afresh["points"]]
    assert [{k: v for k, v in p.items() if k != "latency_ms"} for p in reused["points"]] == strip
    assert len({p["acc"] for p in strip}) > 1  # the taus do differ on these inputs


def test_cooperative_cascades_over_teammate_a_depths(tiny_params, tmp_path) -> None:
    from dnc import stages
    from dnc.evaluation.results import EvalResult

    params = tiny_params.with_overrides({"method": "cooperative", "train.epochs": 1})
    stages.train(params, None, tmp_path / "run")
    stages.evaluate(params, None, tmp_path / "run", tmp_path / "m.json")
    result = EvalResult.model_validate_json((tmp_path / "m.json").read_text())
    depths = result.model_extra["depths"]
    points = {p.tau: p for p in result.cascade.points}
    assert [s["name"] for s in result.cascade.stages] == [d["name"] for d in depths]
    assert points[0.0].acc == pytest.approx(depths[0]["acc_a"])
    assert points[1.01].acc == pytest.approx(depths[-1]["acc_a"])
    assert points[1.01].macs == sum(d["macs"] for d in depths)


@pytest.mark.integration
def test_logged_cascade_model_round_trips_through_mlflow(tmp_path, monkeypatch) -> None:
    import mlflow
    import mlflow.pytorch

    from pipelines.tracking.logged_model import (
        EnsembleClassifier,
        _fluent_tracking_uri,
        log_classifier,
    )

    torch.manual_seed(0)
    members = [nn.Sequential(nn.Flatten(), nn.Linear(16, 3)) for _ in range(3)]
    served = EnsembleClassifier(CascadeModel(members, 0.6, "softmax"), (0.5,), (0.25,)).eval()
    pixels = torch.rand(8, 1, 4, 4)
    with _fluent_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db"):
        with mlflow.start_run():
            info = log_classifier(served, pixels[:2].numpy(), "cascade", "pickle")
        loaded = mlflow.pytorch.load_model(info.model_uri)
    # oracle: the batched cascade run by hand on the normalised pixels
    expected, _ = run_cascade(members, (pixels - 0.5) / 0.25, 0.6, "softmax")
    assert torch.allclose(loaded(pixels), expected, atol=1e-6)


def test_cascade_metric_names_for_mlflow() -> None:
    from pipelines.tracking.schema import final_metrics

    entry = {"acc": 90.0, "nll": 0.3, "params": 10, "macs": 100, "latency_ms": {"1": 2.0}}
    point = {"tau": 0.9, "acc": 88.0, "nll": 0.4, "macs": 150.5, "exit_share": [0.5, 0.5],
             "latency_ms": {"1": 1.5, "100": 9.0}}  # fmt: skip
    budget = {"budget_macs": 160, "tau": 0.9, "test_acc": 88.0, "test_macs": 150.5}
    result = {"ensemble": entry, "members": [{"index": 0, **entry}], "num_test": 10,
              "cascade": {"points": [point], "budget": budget}}  # fmt: skip
    names = final_metrics(result)
    assert names["test/cascade/tau_0.9/macs"] == 150.5
    assert names["test/cascade/tau_0.9/latency_ms/b100"] == 9.0
    assert names["test/cascade/budget/test_acc"] == 88.0
