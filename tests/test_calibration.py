"""Calibration and diversity metrics on inputs with known values, against torchmetrics, scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dnc.evaluation.calibration import (
    brier_score,
    expected_calibration_error,
    mutual_information,
    pairwise_disagreement,
    reliability_bins,
)


def two_class(confidence: float, n: int, n_correct: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n examples all predicting class 0 with `confidence`, exactly n_correct labelled 0."""
    probs = torch.tensor([[confidence, 1 - confidence]], dtype=torch.float64).repeat(n, 1)
    labels = torch.tensor([0] * n_correct + [1] * (n - n_correct))
    return probs, labels


def test_perfectly_calibrated_predictor_has_zero_ece():
    # Confidence 0.8 right on 8 of 10, 0.6 right on 6 of 10: accuracy = confidence in every bin.
    (p1, y1), (p2, y2) = two_class(0.8, 10, 8), two_class(0.6, 10, 6)
    ece = expected_calibration_error(torch.cat([p1, p2]), torch.cat([y1, y2]))
    assert ece == pytest.approx(0.0, abs=1e-12)


def test_over_confident_predictor_hand_value():
    # Half the examples: confidence 0.95, accuracy 0.5 (gap 0.45); half: 0.7, 0.7 (gap 0).
    (p1, y1), (p2, y2) = two_class(0.95, 10, 5), two_class(0.7, 10, 7)
    probs, labels = torch.cat([p1, p2]), torch.cat([y1, y2])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.5 * 0.45)
    # Over- and under-confident groups: 15 bins keep the gaps apart, 2 bins let them cancel.
    (p3, y3) = two_class(0.7, 10, 9)  # accuracy 0.9, gap 0.2
    mixed, mixed_labels = torch.cat([p1, p3]), torch.cat([y1, y3])
    assert expected_calibration_error(mixed, mixed_labels) == pytest.approx(0.5 * 0.45 + 0.5 * 0.2)
    # One bin (0.5, 1]: |accuracy 14/20 - mean confidence 0.825| = 0.125.
    assert expected_calibration_error(mixed, mixed_labels, bins=2) == pytest.approx(0.125)
    all_wrong = two_class(0.9, 4, 0)
    assert expected_calibration_error(*all_wrong) == pytest.approx(0.9)


def test_reliability_bins_are_right_closed_equal_width():
    probs = torch.tensor([[0.2, 0.8], [0.6, 0.4], [1.0, 0.0], [0.5, 0.5]])
    rb = reliability_bins(probs, torch.tensor([1, 1, 0, 0]), bins=4)
    assert torch.allclose(rb.edges, torch.tensor([0, 0.25, 0.5, 0.75, 1.0]).double())
    # Confidences 0.8, 0.6, 1.0, 0.5: 0.5 falls in (0.25, 0.5], 1.0 in (0.75, 1].
    assert rb.count.tolist() == [0, 1, 1, 2]
    assert rb.accuracy.tolist() == [0, 1, 0, 1]
    assert rb.confidence[3].item() == pytest.approx(0.9)


def test_ece_matches_torchmetrics():
    tm = pytest.importorskip("torchmetrics.classification")
    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(2000, 10, generator=gen)
    labels = torch.randint(0, 10, (2000,), generator=gen)
    # Informative on half the rows (the true class boosted), so every bin gets examples.
    logits[:1000].scatter_add_(1, labels[:1000, None], torch.full((1000, 1), 4.0))
    probs = logits.softmax(dim=1)
    reference = tm.MulticlassCalibrationError(num_classes=10, n_bins=15, norm="l1")
    expected = reference(probs, labels).item()
    assert expected > 0.01
    assert expected_calibration_error(probs, labels) == pytest.approx(expected, abs=1e-6)
    (p1, y1), (p2, y2) = two_class(0.95, 10, 5), two_class(0.7, 10, 7)
    probs, labels = torch.cat([p1, p2]), torch.cat([y1, y2])
    expected = tm.MulticlassCalibrationError(num_classes=2, n_bins=15)(probs, labels).item()
    assert expected_calibration_error(probs, labels) == pytest.approx(expected, abs=1e-6)


def test_brier_score_hand_values_and_scikit_learn():
    probs = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    # (0) and (0.25 + 0.25), mean over 2 examples.
    assert brier_score(probs, torch.tensor([0, 0])) == pytest.approx(0.25)
    assert brier_score(probs, torch.tensor([1, 2])) == pytest.approx((2 + 1.5) / 2)
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(5), size=300)
    y = rng.integers(0, 5, size=300)
    expected = sklearn_metrics.brier_score_loss(y, p, labels=list(range(5)))
    assert brier_score(p, y) == pytest.approx(expected, rel=1e-9)


def test_identical_members_have_no_disagreement_and_no_information():
    probs = torch.softmax(torch.randn(50, 7, generator=torch.Generator().manual_seed(2)), dim=1)
    members = probs.expand(4, -1, -1)  # (S, N, C), four copies
    assert pairwise_disagreement(members) == 0.0
    assert mutual_information(members) == pytest.approx(0.0, abs=1e-12)


def test_two_members_by_hand():
    # Labels 0 1 2 3 against 0 1 0 0: they differ on 2 of 4.
    assert pairwise_disagreement(torch.tensor([[0, 1, 2, 3], [0, 1, 0, 0]])) == 0.5
    # Three members: pairs (1,2) 2/4, (1,3) 1/4, (2,3) 1/4 -> mean 1/3.
    three = torch.tensor([[0, 1, 2, 3], [0, 1, 0, 0], [0, 1, 2, 0]])
    assert pairwise_disagreement(three) == pytest.approx(1 / 3)
    # Certain and opposite: H(mean) = ln 2, H(each) = 0; agreeing on the second example: 0.
    members = torch.tensor([[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.5, 0.5]]])
    assert mutual_information(members) == pytest.approx(math.log(2) / 2)


def test_mutual_information_is_the_jensen_shannon_divergence():
    distance = pytest.importorskip("scipy.spatial.distance")
    rng = np.random.default_rng(3)
    a, b = rng.dirichlet(np.ones(6), size=40), rng.dirichlet(np.ones(6), size=40)
    # jensenshannon is the square root of the divergence, natural log by default.
    expected = np.mean([distance.jensenshannon(pa, pb) ** 2 for pa, pb in zip(a, b, strict=True)])
    assert mutual_information(np.stack([a, b])) == pytest.approx(expected, rel=1e-9)


def test_bad_inputs_are_refused():
    probs, labels = two_class(0.9, 4, 2)
    with pytest.raises(ValueError, match="probabilities"):
        expected_calibration_error(torch.randn(4, 2) * 5, labels)
    with pytest.raises(ValueError, match=r"labels \(N,\) expected"):
        brier_score(probs, labels[:3])
    with pytest.raises(ValueError, match="labels: must lie in"):
        brier_score(probs, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="bins must be"):
        expected_calibration_error(probs, labels, bins=0)
    with pytest.raises(ValueError, match="S >= 2"):
        pairwise_disagreement(torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match="S >= 2"):
        mutual_information(probs[None])
