"""The DNR objectives on tiny hand-checked inputs."""

from __future__ import annotations

import math

import pytest
import torch

from dnr.config import LX_ESTIMATORS as LX_ESTIMATOR_NAMES
from dnr.losses import (
    LX_ESTIMATORS,
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


@pytest.mark.parametrize("estimator", [soft_histogram_kl, gaussian_moment_kl])
def test_lx_is_near_zero_on_uniform_quantiles_and_grows_with_the_mismatch(estimator):
    """On the quantile scale the real scores are uniform: an even grid costs ~0, and quantiles
    crowded towards one end cost more the more they crowd."""
    grid = ((torch.arange(640) + 0.5) / 640).reshape(64, 10)
    mask = torch.ones(64, 10, dtype=torch.bool)
    same = estimator(grid, mask, 16)
    near = estimator(grid * 0.8, mask, 16)
    far = (grid * 0.3).requires_grad_()
    far_kl = estimator(far, mask, 16)
    assert abs(same.item()) < 1e-3
    assert same.item() < near.item() < far_kl.item()
    far_kl.backward()
    assert far.grad.abs().sum() > 0
    assert estimator(grid, torch.zeros_like(mask), 16).item() == 0.0


def test_soft_histogram_kl_by_hand():
    # One quantile at 0.25, the centre of bin 0 of 2; bin 1's centre is 0.5 away, bandwidth
    # h = 0.25: kernel logits 0 and -0.5^2 / (2 * 0.25^2) = -2. The uniform side is the kernel
    # histogram of an even grid, symmetric: (1/2, 1/2).
    off = math.exp(-2.0) / (1.0 + math.exp(-2.0))
    floor = 1e-4
    p_gen = [(1.0 - off + floor) / (1 + 2 * floor), (off + floor) / (1 + 2 * floor)]
    expected = sum(g * math.log(g / 0.5) for g in p_gen)
    got = soft_histogram_kl(torch.tensor([[0.25, 0.9]]), torch.tensor([[True, False]]), 2)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_gaussian_moment_kl_by_hand():
    quantiles = torch.tensor([[0.2, 0.4]])  # mu_g = 0.3, var_g = 0.01; uniform: 1/2, 1/12
    var_r = 1.0 / 12.0
    expected = 0.5 * (math.log(var_r / 0.01) + (0.01 + 0.2**2) / var_r - 1.0)
    got = gaussian_moment_kl(quantiles, torch.ones(1, 2, dtype=torch.bool), 4)
    assert got.item() == pytest.approx(expected, rel=1e-5)
