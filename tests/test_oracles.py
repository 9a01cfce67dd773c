"""The losses, ensemble rules and schedule against oracles independent of dnc's code:
scipy's Jensen-Shannon distance, closed-form schedule values, losses computed by hand in
numpy, and inputs on which the three ensemble rules provably disagree."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import log_softmax, softmax

from dnc.config import TrainConfig
from dnc.train.losses import (
    distillation_kl,
    ensemble_log_probs,
    js_divergence,
    mixed_cross_entropy,
)
from dnc.train.schedule import lr_at


def test_two_member_js_divergence_equals_scipy_squared_distance():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 7)) * 3
    p, q = softmax(logits[0], axis=-1), softmax(logits[1], axis=-1)
    # scipy returns the square root of the divergence (natural log by default).
    expected = np.mean([jensenshannon(p[b], q[b]) ** 2 for b in range(5)])
    got = js_divergence(torch.tensor(logits, dtype=torch.float64)).item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_four_member_js_divergence_equals_entropy_formula_by_hand():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 3, 5))
    p = softmax(logits, axis=-1)

    def h(x):
        return -(x * np.log(x)).sum(-1)

    expected = np.mean(h(p.mean(0)) - h(p).mean(0))
    assert js_divergence(torch.tensor(logits)).item() == pytest.approx(expected, rel=1e-5)


def test_identical_members_have_zero_js_divergence():
    one = torch.randn(1, 4, 6)
    assert js_divergence(one.expand(3, 4, 6).clone()).item() == pytest.approx(0.0, abs=1e-6)


def _train_cfg(**kw) -> TrainConfig:
    base = dict(
        epochs=10,
        batch_size=8,
        lr=0.1,
        min_lr=0.001,
        warmup_epochs=2,
        warmup_lr=0.01,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        cot_weight=0.5,
        cot_warmup_epochs=1,
        cot_warmup_per_epoch=False,
        weight_decay_exempt="none",
        lr_floor="blend",
        sync_bn=False,
        mixup_alpha=0.0,
        label_smoothing=0.0,
        amp=False,
        channels_last=False,
        device="cpu",
        progress=False,
    )
    fields = TrainConfig.model_fields
    base.update(kw)
    for name, info in fields.items():  # keys added later keep their declared defaults
        if name not in base and not info.is_required():
            base[name] = info.get_default()
    return TrainConfig(**{k: v for k, v in base.items() if k in fields})


def test_learning_rate_at_named_steps():
    cfg = _train_cfg()
    spe = 100  # 2 warm-up epochs = 200 steps, then 800 cosine steps
    assert lr_at(0, spe, cfg) == pytest.approx(0.01)
    assert lr_at(100, spe, cfg) == pytest.approx(0.01 + (0.1 - 0.01) * 0.5)
    assert lr_at(200, spe, cfg) == pytest.approx(0.1)
    assert lr_at(600, spe, cfg) == pytest.approx((0.1 + 0.001) / 2)  # cosine midpoint
    quarter = 0.001 + 0.5 * (0.1 - 0.001) * (1 + math.cos(math.pi * 0.25))
    assert lr_at(400, spe, cfg) == pytest.approx(quarter)
    assert lr_at(1000, spe, cfg) == pytest.approx(0.001)


def _ce_by_hand(logits: np.ndarray, target: np.ndarray, smoothing: float) -> float:
    c = logits.shape[-1]
    logp = log_softmax(logits, axis=-1)
    soft = np.full_like(logp, smoothing / c)
    soft[np.arange(len(target)), target] += 1 - smoothing
    return float(-(soft * logp).sum(-1).mean())


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_with_smoothing_and_mixup_by_hand(smoothing):
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(2, 6, 4))  # (S, B, C)
    y = rng.integers(0, 4, size=6)
    perm = rng.permutation(6)
    lam = 0.3
    flat = logits.reshape(-1, 4)
    plain = _ce_by_hand(flat, np.tile(y, 2), smoothing)
    other = _ce_by_hand(flat, np.tile(y[perm], 2), smoothing)
    t = torch.tensor(logits)
    got_plain = mixed_cross_entropy(t, torch.tensor(y), None, smoothing).item()
    mix = (torch.tensor(y[perm]), lam)
    got_mix = mixed_cross_entropy(t, torch.tensor(y), mix, smoothing).item()
    assert got_plain == pytest.approx(plain, rel=1e-6)
    assert got_mix == pytest.approx(lam * plain + (1 - lam) * other, rel=1e-6)


def test_distillation_by_hand():
    rng = np.random.default_rng(3)
    s, t = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    temp = 2.0
    ps, pt = softmax(s / temp, -1), softmax(t / temp, -1)
    expected = temp**2 * np.mean((pt * (np.log(pt) - np.log(ps))).sum(-1))
    got = distillation_kl(torch.tensor(s), torch.tensor(t), temp).item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_ensemble_rules_disagree_as_their_formulas_say():
    # Member A is sure of class 0, member B prefers class 1: averaging logits, averaging
    # probabilities and the per-class max give three different distributions (asserted below).
    logits = np.array([[[4.0, 0.0, 0.0]], [[-6.0, 1.5, 0.0]]])  # (S=2, B=1, C=3)
    p = softmax(logits, axis=-1)
    by_logits = softmax(logits.mean(0), -1)
    by_softmax = p.mean(0)
    top = p.max(0)
    by_max = top / top.sum(-1, keepdims=True)
    t = torch.tensor(logits)
    for how, want in (("logits", by_logits), ("softmax", by_softmax), ("max", by_max)):
        got = ensemble_log_probs(t, how).exp().numpy()
        np.testing.assert_allclose(got, want, rtol=1e-6)
    # The rules give different probability vectors on this input, so a mix-up of rules fails.
    assert not np.allclose(by_logits, by_softmax, atol=1e-3)
    assert not np.allclose(by_softmax, by_max, atol=1e-3)
    assert not np.allclose(by_logits, by_max, atol=1e-3)
