import math

import pytest
import torch
import torch.nn.functional as F

from dnc.train.losses import cot_weight_at, ensemble_log_probs, js_divergence


def test_js_zero_for_identical_members():
    z = torch.randn(8, 10)
    logits = torch.stack([z, z, z])  # (S=3, B, C)
    assert js_divergence(logits).item() == pytest.approx(0.0, abs=1e-6)


def test_js_positive_symmetric_and_bounded():
    torch.manual_seed(0)
    a, b = torch.randn(16, 10) * 3, torch.randn(16, 10) * 3
    js_ab = js_divergence(torch.stack([a, b]))
    js_ba = js_divergence(torch.stack([b, a]))
    assert js_ab.item() > 0
    assert js_ab.item() == pytest.approx(js_ba.item(), rel=1e-6)
    assert js_ab.item() <= math.log(2) + 1e-6  # JSD of two distributions is at most ln 2


def test_js_matches_definition():
    torch.manual_seed(1)
    logits = torch.randn(4, 5, 7)
    p = F.softmax(logits, -1)
    mean = p.mean(0)

    def h(q):
        return -(q * q.log()).sum(-1)

    expected = (h(mean) - h(p).mean(0)).mean()
    assert js_divergence(logits).item() == pytest.approx(expected.item(), rel=1e-5)


def test_js_has_gradients():
    logits = torch.randn(2, 4, 3, requires_grad=True)
    js_divergence(logits).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_cot_weight_warmup():
    assert cot_weight_at(0, 0.5, 40) == 0.005  # floor
    assert cot_weight_at(20, 0.5, 40) == pytest.approx(0.25)
    assert cot_weight_at(40, 0.5, 40) == 0.5
    assert cot_weight_at(3, 0.5, 0) == 0.5


@pytest.mark.parametrize("how", ["logits", "softmax", "max"])
def test_ensemble_is_a_distribution(how):
    log_p = ensemble_log_probs(torch.randn(3, 6, 5), how)
    assert torch.allclose(log_p.exp().sum(-1), torch.ones(6), atol=1e-5)


def test_ensemble_of_one_is_the_member():
    z = torch.randn(1, 4, 5)
    for how in ("logits", "softmax", "max"):
        assert torch.allclose(ensemble_log_probs(z, how), F.log_softmax(z[0], -1), atol=1e-5)


def test_ensemble_logits_is_mean_of_logits():
    z = torch.randn(2, 4, 5)
    assert torch.allclose(ensemble_log_probs(z, "logits"), F.log_softmax(z.mean(0), -1))
