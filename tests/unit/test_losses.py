"""The DNR objectives on tiny hand-checked inputs."""

from __future__ import annotations

import math

import pytest
import torch

from dnr.config import LX_ESTIMATORS as LX_ESTIMATOR_NAMES
from dnr.losses import (
    LX_ESTIMATORS,
    ScoreDistribution,
    adversarial_loss,
    gaussian_moment_kl,
    masked_bce,
    soft_histogram,
    soft_histogram_kl,
)


def _bce(logit: float, label: float) -> float:
    p = 1.0 / (1.0 + math.exp(-logit))
    return -(label * math.log(p) + (1 - label) * math.log(1 - p))


def test_registry_matches_config_choices():
    assert set(LX_ESTIMATORS) == set(LX_ESTIMATOR_NAMES)


def test_masked_bce_is_the_mean_over_labelled_candidates_of_the_batch():
    logits = torch.tensor([[0.0, 2.0, 9.0], [-1.0, 5.0, 5.0]])
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    # Request 0 has two labelled candidates, request 1 one: the mean is over 3 items, not 2 requests.
    mask = torch.tensor([[True, True, False], [True, False, False]])
    expected = (_bce(0.0, 1.0) + _bce(2.0, 0.0) + _bce(-1.0, 0.0)) / 3
    assert masked_bce(logits, labels, mask).item() == pytest.approx(expected, rel=1e-6)
    assert adversarial_loss(logits, labels, mask).item() == pytest.approx(-expected, rel=1e-6)


def test_a_request_without_labels_changes_nothing():
    logits = torch.tensor([[0.5, -0.5], [3.0, 3.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    one = torch.tensor([[True, True], [False, False]])
    alone = masked_bce(logits[:1], labels[:1], one[:1])
    assert masked_bce(logits, labels, one).item() == pytest.approx(alone.item())


def test_empty_mask_gives_zero_and_a_finite_zero_gradient():
    logits = torch.tensor([[float("inf"), 1.0]], requires_grad=True)
    loss = masked_bce(logits, torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros(1, 2))


def test_soft_histogram_mass_and_location():
    scores = torch.tensor([[0.05, 0.95, 0.5], [0.95, 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    counts = soft_histogram(scores, mask, bins=10)
    assert counts.sum().item() == pytest.approx(3.0, rel=1e-6)  # one unit per masked score
    assert counts.argmax().item() == 9 and counts[9].item() > 1.5  # two scores at 0.95
    assert counts[0].item() > 0.6  # the one at 0.05, centre of bin 0
    counts[0].backward()
    assert scores.grad[0, 0] != 0 and scores.grad[0, 2] == 0  # differentiable, masked ones untouched


def test_score_distribution_ema_by_hand():
    dist = ScoreDistribution(bins=4, decay=0.5)
    all_real = torch.ones(1, 2, dtype=torch.bool)
    first = torch.tensor([[0.125, 0.125]])
    second = torch.tensor([[0.875, 0.875]])
    dist.update(dist.batch_stats(first, all_real))
    p_first = soft_histogram(first, all_real, 4) / 2
    torch.testing.assert_close(dist.probs, p_first)  # the first batch replaces the uniform prior
    assert dist.mean.item() == pytest.approx(0.125)
    dist.update(dist.batch_stats(second, all_real))
    p_second = soft_histogram(second, all_real, 4) / 2
    torch.testing.assert_close(dist.probs, 0.5 * p_first + 0.5 * p_second)
    assert dist.mean.item() == pytest.approx(0.5)
    assert dist.var.item() == pytest.approx(0.5 * (0.125**2 + 0.875**2) - 0.25)
    before = dist.state_dict()
    dist.update(dist.batch_stats(second, torch.zeros(1, 2, dtype=torch.bool)))
    assert all(torch.equal(before[k], v) for k, v in dist.state_dict().items())  # empty batch: no change
    assert int(dist.num_updates) == 2


def test_score_distribution_survives_a_state_dict_round_trip():
    dist = ScoreDistribution(bins=8, decay=0.9)
    dist.update(dist.batch_stats(torch.rand(4, 5), torch.ones(4, 5, dtype=torch.bool)))
    restored = ScoreDistribution(bins=8, decay=0.9)
    restored.load_state_dict(dist.state_dict())
    assert set(dist.state_dict()) == {"probs", "mean", "sq_mean", "num_updates"}
    torch.testing.assert_close(restored.probs, dist.probs)


@pytest.mark.parametrize("estimator", [soft_histogram_kl, gaussian_moment_kl])
def test_lx_is_zero_on_the_real_distribution_and_grows_with_the_mismatch(estimator):
    torch.manual_seed(0)
    real_scores = torch.rand(64, 10) * 0.5
    mask = torch.ones(64, 10, dtype=torch.bool)
    real = ScoreDistribution(bins=16, decay=0.9)
    real.update(real.batch_stats(real_scores, mask))
    same = estimator(real_scores, mask, real)
    near = estimator(real_scores + 0.1, mask, real)
    far = (real_scores + 0.5).requires_grad_()
    far_kl = estimator(far, mask, real)
    assert abs(same.item()) < 1e-5
    assert 0 < near.item() < far_kl.item()
    far_kl.backward()
    assert far.grad.abs().sum() > 0
    assert estimator(real_scores, torch.zeros_like(mask), real).item() == 0.0


def test_soft_histogram_kl_by_hand():
    real = ScoreDistribution(bins=2, decay=0.9)
    real.probs.copy_(torch.tensor([0.25, 0.75]))
    # One score at 0.25, the centre of bin 0; bin 1's centre is 0.5 away, bandwidth h = 0.25:
    # kernel logits 0 and -0.5^2 / (2 * 0.25^2) = -2.
    off = math.exp(-2.0) / (1.0 + math.exp(-2.0))
    floor = 1e-4
    p_gen = [(1.0 - off + floor) / (1 + 2 * floor), (off + floor) / (1 + 2 * floor)]
    p_real = [(0.25 + floor) / (1 + 2 * floor), (0.75 + floor) / (1 + 2 * floor)]
    expected = sum(g * math.log(g / r) for g, r in zip(p_gen, p_real))
    got = soft_histogram_kl(torch.tensor([[0.25, 0.9]]), torch.tensor([[True, False]]), real)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_gaussian_moment_kl_by_hand():
    real = ScoreDistribution(bins=4, decay=0.9)
    real.mean.fill_(0.5)
    real.sq_mean.fill_(0.5**2 + 0.04)  # var_r = 0.04
    scores = torch.tensor([[0.2, 0.4]])  # mu_g = 0.3, var_g = 0.01
    expected = 0.5 * (math.log(0.04 / 0.01) + (0.01 + 0.2**2) / 0.04 - 1.0)
    got = gaussian_moment_kl(scores, torch.ones(1, 2, dtype=torch.bool), real)
    assert got.item() == pytest.approx(expected, rel=1e-5)
