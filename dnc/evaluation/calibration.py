"""Calibration and diversity of predictions: ECE, Brier score, disagreement, mutual information.

All functions take probabilities (after softmax), as tensors or arrays, and return floats computed
in float64. Shapes: `probs` (N, C) and `labels` (N,) for one predictor; `member_probs` (S, N, C)
for the S members of an ensemble.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from numpy.typing import ArrayLike as NumpyLike
from torch import Tensor

ArrayLike = Tensor | NumpyLike  # anything torch.as_tensor accepts


@dataclass(frozen=True)
class ReliabilityBins:
    """Equal-width top-label confidence bins: edges (bins + 1,), then per bin (bins,) the
    example count, mean confidence and accuracy (0 where a bin is empty)."""

    edges: Tensor
    count: Tensor
    confidence: Tensor
    accuracy: Tensor


def _probs(probs: ArrayLike, what: str = "probs") -> Tensor:
    p = torch.as_tensor(probs).detach().to("cpu", torch.float64)
    if p.numel() == 0 or not torch.isfinite(p).all():
        raise ValueError(f"{what}: must be non-empty and finite")
    # float32 softmax rows sum to 1 within ~1e-6; 1e-4 still catches logits passed by mistake.
    if (p < 0).any() or not torch.allclose(p.sum(-1), torch.ones(()).double(), atol=1e-4):
        raise ValueError(f"{what}: rows must be probabilities (non-negative, summing to 1)")
    return p


def _probs_and_labels(probs: ArrayLike, labels: ArrayLike) -> tuple[Tensor, Tensor]:
    p = _probs(probs)
    y = torch.as_tensor(labels).detach().to("cpu", torch.long)
    if p.dim() != 2 or y.dim() != 1 or y.shape[0] != p.shape[0]:
        raise ValueError(
            f"probs (N, C) and labels (N,) expected, got {tuple(p.shape)} and {tuple(y.shape)}"
        )
    if (y < 0).any() or (y >= p.shape[1]).any():
        raise ValueError(f"labels: must lie in [0, {p.shape[1]})")
    return p, y


def reliability_bins(probs: ArrayLike, labels: ArrayLike, bins: int = 15) -> ReliabilityBins:
    """Top-label reliability bins: bin m holds confidences in ((m-1)/bins, m/bins], as in
    Guo et al. 2017 (torchmetrics instead closes bins on the left and gives exactly 1.0 a bin of
    its own; the two agree unless a confidence lies exactly on an edge)."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    p, y = _probs_and_labels(probs, labels)
    confidence, predicted = p.max(dim=1)
    correct = (predicted == y).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    index = torch.bucketize(confidence, edges[1:-1], right=False)  # (N,) in [0, bins)
    count = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, torch.ones_like(correct))
    conf_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, confidence)
    acc_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, correct)
    safe = count.clamp(min=1)  # empty bins: sums are 0, so 0 / 1 = 0
    return ReliabilityBins(edges, count.long(), conf_sum / safe, acc_sum / safe)


def expected_calibration_error(probs: ArrayLike, labels: ArrayLike, bins: int = 15) -> float:
    """Top-label ECE with equal-width bins: sum over bins of (n_b / N) |accuracy_b - conf_b|."""
    rb = reliability_bins(probs, labels, bins)
    weight = rb.count.double() / rb.count.sum()
    return float((weight * (rb.accuracy - rb.confidence).abs()).sum())


def brier_score(probs: ArrayLike, labels: ArrayLike) -> float:
    """Multi-class Brier score: sum over classes of (p_c - [c = y])^2, mean over examples.

    This is Brier's original convention (range 0-2, as scikit-learn's multi-class
    `brier_score_loss`); some libraries divide it further by the number of classes.
    """
    p, y = _probs_and_labels(probs, labels)
    onehot = torch.nn.functional.one_hot(y, p.shape[1]).double()
    return float(((p - onehot) ** 2).sum(dim=1).mean())


def _members(x: ArrayLike, what: str) -> Tensor:
    t = torch.as_tensor(x).detach().to("cpu")
    if t.dim() < 2 or t.shape[0] < 2:
        raise ValueError(f"{what}: needs S >= 2 members along dim 0, got shape {tuple(t.shape)}")
    return t


def pairwise_disagreement(member_preds: ArrayLike) -> float:
    """Mean over member pairs of the fraction of examples whose predicted classes differ.

    `member_preds`: (S, N) predicted labels, or (S, N, C) probabilities whose argmax is taken.
    """
    t = _members(member_preds, "pairwise_disagreement")
    labels = t.argmax(dim=-1) if t.dim() == 3 else t.long()  # (S, N)
    if labels.dim() != 2:
        raise ValueError(f"pairwise_disagreement: (S, N) or (S, N, C), got {tuple(t.shape)}")
    differ = labels[:, None, :] != labels[None, :, :]  # (S, S, N)
    s = labels.shape[0]
    # The diagonal never differs, so the mean over the S (S - 1) ordered pairs is the sum / that.
    return float(differ.double().mean(dim=-1).sum() / (s * (s - 1)))


def _entropy(p: Tensor) -> Tensor:
    return -torch.special.xlogy(p, p).sum(dim=-1)  # 0 log 0 = 0


def mutual_information(member_probs: ArrayLike) -> float:
    """Ensemble mutual information in nats, mean over examples: H(mean_i p_i) - mean_i H(p_i).

    This is the Jensen-Shannon divergence of the members' predictive distributions (equal
    weights); 0 when the members agree exactly, at most ln S.
    """
    t = _members(member_probs, "mutual_information")
    if t.dim() != 3:
        raise ValueError(f"mutual_information: (S, N, C) expected, got {tuple(t.shape)}")
    p = _probs(t, "member_probs")  # (S, N, C)
    mi = _entropy(p.mean(dim=0)) - _entropy(p).mean(dim=0)  # (N,)
    return float(mi.clamp(min=0).mean())  # clamp: rounding can leave -1e-17 for equal members
