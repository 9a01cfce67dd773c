"""The typed schema of the evaluation metrics JSON (`reports/evaluate/<run>.json`).

`dnc.stages.evaluate` writes through `EvalResult`, so every method's JSON has the same
validated core (`ensemble`, `members`, `prefixes`, `curve`, `num_test`, `config`,
`selection`, `training`); method-specific parts (`depths`, `leader`, `deploy` for cooperative) and
per-method extras in each row are kept as extra fields. Readers may load a file with
`EvalResult.model_validate_json` instead of indexing string keys.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class _Row(BaseModel):
    # Extra keys stay: methods add their own (acc_by_method, kept, team, latency_ms, ...).
    model_config = ConfigDict(extra="allow", frozen=True)


class Cost(_Row):
    """Accuracy (%), and the inference cost of one evaluated model."""

    acc: float
    params: int
    macs: int


class CurvePoint(Cost):
    """One deployable model on the accuracy-vs-MACs curve."""

    method: str
    label: str


class Prefix(Cost):
    """The ensemble of the first k members."""

    k: int
    nll: float
    latency_ms: dict[str, float]


class Member(_Row):
    """One evaluated output (a SplitNet member, a Teammate depth)."""

    index: int
    acc: float
    nll: float


class Ensemble(Cost):
    """The ensemble the best epoch was selected on."""

    nll: float
    method: str  # the ensembling rule: logits | softmax | max


class RunConfig(_Row):
    """What was evaluated, where."""

    method: str
    dataset: str
    model: str
    seed: int
    device: str
    devices: list[str]
    flops_unit: str


class Selection(_Row):
    """Which checkpoint: the best validation epoch."""

    best_epoch: int
    selected_on: str
    val: dict[str, float]


class Training(_Row):
    """Whether the evaluated run finished its epochs (`evaluate --allow-incomplete` may
    evaluate one that did not; trackers tag such runs from `complete`)."""

    epochs: int  # train.epochs of the params
    epochs_done: int
    complete: bool


class CascadePoint(_Row):
    """The cascade at one threshold tau, on the test set (mean MACs per image)."""

    tau: float
    acc: float
    nll: float
    macs: float
    exit_share: list[float]
    latency_ms: dict[str, float]


class CascadeBudget(_Row):
    """The tau whose validation mean MACs fit `eval.cascade_budget_macs`, and its test score."""

    budget_macs: int
    tau: float
    selected_on: str
    val_acc: float
    val_macs: float
    test_acc: float
    test_macs: float


class Cascade(_Row):
    """The confidence-gated cascade over the members (dnc/evaluation/cascade.py)."""

    gate: str
    combine: str
    stages: list[dict[str, Any]]
    points: list[CascadePoint]
    budget: CascadeBudget | None = None


class EvalResult(_Row):
    """The whole metrics JSON of one evaluated run."""

    ensemble: Ensemble
    members: list[Member]
    prefixes: list[Prefix]
    curve: list[CurvePoint]
    num_test: int
    config: RunConfig
    selection: Selection
    training: Training
    cascade: Cascade | None = None  # methods whose outputs form a cascade


def validated(metrics: dict[str, Any]) -> dict[str, Any]:
    """`metrics` checked against `EvalResult`, as plain JSON data (same keys, same order)."""
    return EvalResult.model_validate(metrics).model_dump(mode="json")
