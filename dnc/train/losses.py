"""Co-training losses and ensembling (SplitNet, arXiv 2011.14660)."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

EnsembleHow = Literal["logits", "softmax", "max"]


def entropy(log_probs: Tensor) -> Tensor:
    """Shannon entropy over the last dim, from log-probabilities; shape drops that dim."""
    return -(log_probs.exp() * log_probs).sum(dim=-1)


def js_divergence(logits: Tensor) -> Tensor:
    """Generalised Jensen-Shannon divergence among S members' softmax outputs.

    JSD = H(mean_i p_i) - mean_i H(p_i), entropies summed over classes and averaged over
    the batch; no temperature and no stop-gradient, as in the paper. `logits`: (S, B, C).
    """
    log_p = F.log_softmax(logits.float(), dim=-1)  # (S, B, C)
    log_mean = torch.logsumexp(log_p, dim=0) - math.log(log_p.shape[0])  # (B, C)
    return (entropy(log_mean) - entropy(log_p).mean(dim=0)).mean()


def cot_weight_at(
    epoch: float, cot_weight: float, warmup_epochs: float, per_epoch: bool = False
) -> float:
    """Co-training weight w(epoch): linear warm-up floored at 0.005, then constant.

    `per_epoch` holds w fixed within an epoch (the reference code steps it once per
    epoch); by default it ramps every iteration with the fractional epoch. `cot_weight` 0 is
    exactly 0 at every epoch (independent members, no JSD at all): the floor only keeps a
    non-zero weight from starting at 0, it never switches co-training on.
    """
    if cot_weight == 0:
        return 0.0
    if per_epoch:
        epoch = math.floor(epoch)
    if warmup_epochs > 0 and epoch < warmup_epochs:
        return max(cot_weight * epoch / warmup_epochs, 0.005)
    return cot_weight


def ensemble_log_probs(logits: Tensor, how: EnsembleHow = "logits") -> Tensor:
    """Combine members' logits (S, B, C) into ensemble log-probabilities (B, C).

    logits: softmax of the mean logit (the reference default); softmax: mean of the
    members' probabilities; max: per-class max probability, renormalised.
    """
    logits = logits.float()
    if how == "logits":
        return F.log_softmax(logits.mean(dim=0), dim=-1)
    log_p = F.log_softmax(logits, dim=-1)  # (S, B, C)
    if how == "softmax":
        return torch.logsumexp(log_p, dim=0) - math.log(log_p.shape[0])
    if how == "max":
        top = log_p.max(dim=0).values  # (B, C)
        return top - torch.logsumexp(top, dim=-1, keepdim=True)
    raise ValueError(f"split.ensemble: unknown ensemble {how!r}")


def mixed_cross_entropy(
    logits: Tensor, targets: Tensor, mix: tuple[Tensor, float] | None, smoothing: float
) -> Tensor:
    """Cross-entropy of (..., B, C) logits, mixup-aware: mix = (permuted targets, lam)."""
    flat = logits.reshape(-1, logits.shape[-1])  # (S*B, C)
    repeat = flat.shape[0] // targets.shape[0]
    loss = F.cross_entropy(flat, targets.repeat(repeat), label_smoothing=smoothing)
    if mix is None:
        return loss
    other, lam = mix
    loss_b = F.cross_entropy(flat, other.repeat(repeat), label_smoothing=smoothing)
    return lam * loss + (1.0 - lam) * loss_b


def distillation_kl(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """Knowledge distillation T^2 * KL(softmax(teacher/T) || softmax(student/T)).

    Batch mean of (B, C) logits; the teacher is detached (it teaches, it does not learn
    from this term). T^2 keeps the gradient scale independent of T (Hinton et al., 2015).
    Exactly 0 when the student's logits equal the teacher's.
    """
    t = temperature
    log_student = F.log_softmax(student.float() / t, dim=-1)
    log_teacher = F.log_softmax(teacher.detach().float() / t, dim=-1)
    kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    return kl * (t * t)


def draw_mixup(
    views: Tensor, targets: Tensor, alpha: float
) -> tuple[Tensor, tuple[Tensor, float] | None]:
    """Mixup drawn once per batch and shared by all views (paper: alpha 0.2 on CIFAR)."""
    if alpha <= 0:
        return views, None
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(targets.shape[0], device=targets.device)
    mixed = lam * views + (1.0 - lam) * views[:, perm]  # (V, B, C, H, W)
    return mixed, (targets[perm], lam)
