"""Noise generators: ranges, the heuristic formula, the MLP's gradient paths, synthesize_scores."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from dnr.config import HEURISTIC_GENERATORS, MODEL_GENERATORS, DNRConfig
from dnr.models import GENERATORS, RerankerContext, build_generator, synthesize_scores
from tests.unit.rerank_helpers import make_batch, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

D_MODEL = 16


def _context(batch, requires_grad: bool = False) -> RerankerContext:
    items = torch.randn(*batch.item_ids.shape, D_MODEL, requires_grad=requires_grad)
    user = torch.randn(batch.num_requests, D_MODEL, requires_grad=requires_grad)
    return RerankerContext(items, user)


def test_registry_matches_config_choices():
    assert set(GENERATORS) == set(HEURISTIC_GENERATORS) | set(MODEL_GENERATORS)


@pytest.mark.parametrize("name", HEURISTIC_GENERATORS)
def test_heuristics_are_parameter_free_and_in_range(name):
    torch.manual_seed(0)
    generator = build_generator(name, DNRConfig(), D_MODEL)
    labels = (torch.rand(64, 50) < 0.3).float()
    scores = generator(labels)
    assert list(generator.parameters()) == []
    assert scores.shape == labels.shape
    assert (scores >= 0).all() and (scores <= 1).all()


@pytest.mark.parametrize("name", HEURISTIC_GENERATORS)
def test_heuristic_formula_at_its_extremes(name):
    labels = (torch.rand(8, 10) < 0.5).float()
    keep_labels = build_generator(name, DNRConfig(lambda_c=0.0), D_MODEL)
    torch.testing.assert_close(keep_labels(labels), labels)
    # With lambda_c = 0.8 a clicked candidate's score is at least 1 - 0.8.
    scores = build_generator(name, DNRConfig(lambda_c=0.8), D_MODEL)(labels)
    assert (scores[labels == 1] >= 0.2 - 1e-6).all()
    assert (scores[labels == 0] <= 0.8 + 1e-6).all()


def test_noise_distributions_have_the_configured_mean():
    torch.manual_seed(0)
    labels = torch.zeros(200, 50)
    beta = build_generator("beta", DNRConfig(lambda_c=1.0, beta_alpha=2.0, beta_beta=6.0), D_MODEL)(labels)
    assert abs(beta.mean().item() - 2.0 / 8.0) < 0.01
    gaussian_cfg = DNRConfig(lambda_c=1.0, gaussian_mu=0.3, gaussian_sigma=0.05)
    gauss = build_generator("gaussian", gaussian_cfg, D_MODEL)(labels)
    assert abs(gauss.mean().item() - 0.3) < 0.01 and abs(gauss.std().item() - 0.05) < 0.01


def _ks_statistic(samples: torch.Tensor, cdf) -> float:
    x = samples.flatten().double().sort().values
    n = x.numel()
    fitted = cdf(x)
    above = torch.arange(1, n + 1, dtype=torch.float64) / n - fitted
    below = fitted - torch.arange(0, n, dtype=torch.float64) / n
    return max(above.max().item(), below.max().item())


def test_default_beta_noise_is_the_arcsine_law_as_the_general_sampler_draws_it():
    torch.manual_seed(0)
    arcsine_cdf = lambda x: 2.0 / math.pi * torch.asin(x.sqrt())  # CDF of Beta(1/2, 1/2)
    fast = build_generator("beta", DNRConfig(lambda_c=1.0), D_MODEL)  # beta_alpha = beta_beta = 0.5
    draws = fast(torch.zeros(100, 100))  # lambda_c 1: x' = eps
    general = torch.distributions.Beta(0.5, 0.5).sample((10_000,))
    # Kolmogorov-Smirnov at n = 10,000: 1.95 / sqrt(n) is the 0.1% critical value
    assert _ks_statistic(draws, arcsine_cdf) < 0.0195
    assert _ks_statistic(general, arcsine_cdf) < 0.0195
    # the test can fail: sin instead of sin^2, or a uniform, is far from the arcsine law
    assert _ks_statistic(draws.sqrt(), arcsine_cdf) > 0.1
    assert _ks_statistic(torch.rand(10_000), arcsine_cdf) > 0.1
    # other parameters take the general sampler
    skewed = build_generator("beta", DNRConfig(lambda_c=1.0, beta_alpha=0.5, beta_beta=2.0), D_MODEL)
    assert abs(skewed(torch.zeros(100, 100)).mean().item() - 0.5 / 2.5) < 0.01


@pytest.mark.parametrize("lambda_c", [0.3, 0.4, 0.8])
def test_the_mlp_generator_is_anchored_at_the_labels(lambda_c):
    """u' = (1 - lambda_c) z + lambda_c eps: within [(1 - lambda_c) z, (1 - lambda_c) z + lambda_c],
    even when the MLP's output saturates (weights pushed far in both directions)."""
    torch.manual_seed(0)
    batch = make_batch(num_requests=64)
    generator = build_generator("mlp", DNRConfig(lambda_c=lambda_c, generator_hidden=8, noise_dim=4), D_MODEL)
    context = _context(batch)
    low, high = (1 - lambda_c) * batch.labels, (1 - lambda_c) * batch.labels + lambda_c
    for push in (-50.0, 50.0, 0.0):
        with torch.no_grad():
            generator.net[-1].bias.fill_(push)
            u = generator(batch.labels, context)
        assert (u >= low - 1e-6).all() and (u <= high + 1e-6).all()
        if push:  # saturated: at the band's end, never beyond it
            torch.testing.assert_close(u, low if push < 0 else high, atol=1e-5, rtol=0)
    if lambda_c < 0.5:  # the paper's range: every positive above every negative
        assert u[batch.labels > 0].min() > u[batch.labels == 0].max()


def test_synthetic_scores_on_the_real_scale_keep_the_band():
    """Mapped through the real inverse CDF, a positive's score is at or above the real
    (1 - lambda_c)-quantile and a negative's at or below the lambda_c-quantile."""
    from dnr.models.score_quantiles import ScoreQuantiles

    torch.manual_seed(0)
    real = torch.sigmoid(torch.randn(1, 5000) - 3.5)
    sketch = ScoreQuantiles()
    sketch.update(sketch.batch_counts(real, torch.ones_like(real, dtype=torch.bool)), 0.9)
    batch = make_batch(num_requests=64)
    generator = build_generator("mlp", DNRConfig(lambda_c=0.4, generator_hidden=8, noise_dim=4), D_MODEL)
    with torch.no_grad():
        x = synthesize_scores(generator, batch, _context(batch), sketch.icdf)
    positives, negatives = batch.label_mask & (batch.labels > 0), batch.label_mask & (batch.labels == 0)
    assert x[positives].min() >= float(sketch.icdf(torch.tensor(0.6))) - 1e-6
    assert x[negatives].max() <= float(sketch.icdf(torch.tensor(0.4))) + 1e-6
    assert float(x[batch.label_mask].median()) < 0.1  # on the retriever's scale (median ~0.03), not [0, 1]


def test_mlp_output_in_open_interval_and_gradients_reach_phi_only():
    torch.manual_seed(0)
    batch = make_batch()
    generator = build_generator("mlp", DNRConfig(generator_hidden=8, noise_dim=4), D_MODEL)
    with torch.no_grad():  # as after some training: the zero-started last layer has moved
        generator.net[-1].weight.normal_()
    context = _context(batch, requires_grad=True)
    scores = generator(batch.labels, context)
    assert scores.shape == batch.labels.shape
    assert (scores > 0).all() and (scores < 1).all()
    scores.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in generator.parameters())
    assert context.items.grad is None and context.user.grad is None


def test_mlp_is_random_and_conditioned_on_labels():
    torch.manual_seed(0)
    batch = make_batch()
    generator = build_generator("mlp", DNRConfig(generator_hidden=8, noise_dim=4), D_MODEL)
    context = _context(batch)
    with torch.no_grad():
        first, second = generator(batch.labels, context), generator(batch.labels, context)
        flipped = generator(1.0 - batch.labels, context)
    assert not torch.equal(first, second)
    assert not torch.allclose(first.mean(), flipped.mean(), atol=1e-4)


def test_mlp_needs_the_context():
    generator = build_generator("mlp", DNRConfig(), D_MODEL)
    with pytest.raises(ValueError, match="context"):
        generator(torch.zeros(2, 3))


def test_synthesized_scores_keep_real_scores_where_unlabelled():
    torch.manual_seed(0)
    batch = make_batch()
    batch = dataclasses.replace(batch, scores=batch.scores.masked_fill(batch.label_mask, 0.123))
    synthetic = synthesize_scores(build_generator("beta", DNRConfig(), D_MODEL), batch)
    torch.testing.assert_close(synthetic[~batch.label_mask], batch.scores[~batch.label_mask])
    assert (synthetic[~batch.mask] == 0).all()
    assert (synthetic[batch.label_mask] != 0.123).all()


def test_dnr_config_names_the_bad_field():
    with pytest.raises(ValueError, match="dnr.heuristic='uniform'"):
        DNRConfig(heuristic="uniform")
    with pytest.raises(ValueError, match="dnr.lambda_c=1.5"):
        DNRConfig(lambda_c=1.5)
    with pytest.raises(ValueError, match="dnr.use_generator"):
        DNRConfig(use_adv=False, use_lx=False)


@pytest.mark.parametrize("name", ["beta", "gaussian"])
def test_lambda_c_for_auc_gives_synthetic_lists_that_rank_as_asked(name):
    """dnr.match_auc: the lambda_c the table gives makes the heuristic's synthetic scores rank
    positives above negatives with the asked AUC (checked on fresh draws)."""
    heuristic = build_generator(name, DNRConfig(), D_MODEL)
    assert float(heuristic.lambda_c_for_auc(torch.tensor(1.0))) <= 0.51
    assert float(heuristic.lambda_c_for_auc(torch.tensor(0.5))) >= 0.99
    torch.manual_seed(1)
    for target in (0.6, 0.75, 0.9):
        heuristic.lambda_c = heuristic.lambda_c_for_auc(torch.tensor(target))
        n = 200_000
        positives = heuristic(torch.ones(n))
        negatives = heuristic(torch.zeros(n))
        assert float((positives > negatives).float().mean()) == pytest.approx(target, abs=0.01)


@pytest.mark.parametrize("heuristic", ["beta", "gaussian"])
def test_the_learned_generator_starts_as_the_heuristic(heuristic):
    """At the switch the learned generator draws exactly the heuristic's law (its MLP's last
    layer starts at zero and it perturbs the heuristic's own draw): no jump in the task."""
    batch = make_batch(num_requests=64)
    cfg = DNRConfig(heuristic=heuristic, lambda_c=0.9, generator_hidden=8, noise_dim=4)
    heuristic_noise, learned = build_generator(heuristic, cfg, D_MODEL), build_generator("mlp", cfg, D_MODEL)
    context = _context(batch)
    torch.manual_seed(5)
    expected = heuristic_noise(batch.labels)
    torch.manual_seed(5)
    with torch.no_grad():
        got = learned(batch.labels, context)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
