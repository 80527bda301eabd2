"""The running sketch of real scores: the quantile map's round trip, its identity on uniform
scores, merging across workers, and its place in the reranker's state."""

from __future__ import annotations

import pytest
import torch

from dnr.models import build_reranker
from dnr.models.score_quantiles import BINS, ScoreQuantiles
from tests.unit.rerank_helpers import TINY_DATA, tiny_model


def _calibrated(n: int, seed: int = 0) -> torch.Tensor:
    """Scores like a calibrated retriever's: most near a few percent, a tail towards 1."""
    g = torch.Generator().manual_seed(seed)
    return torch.sigmoid(torch.randn(n, generator=g) * 1.2 - 3.5)


def _fitted(scores: torch.Tensor) -> ScoreQuantiles:
    sketch = ScoreQuantiles()
    sketch.update(sketch.batch_counts(scores.reshape(1, -1), torch.ones(1, scores.numel(), dtype=torch.bool)), 0.9)
    return sketch


def test_a_fresh_sketch_is_the_identity_the_papers_uniform_case():
    sketch, x = ScoreQuantiles(), torch.rand(1000)
    torch.testing.assert_close(sketch.cdf(x), x, atol=2e-6, rtol=0)
    torch.testing.assert_close(sketch.icdf(x), x, atol=2e-6, rtol=0)


def test_cdf_and_icdf_invert_each_other_on_calibrated_scores():
    scores = _calibrated(20_000)
    sketch = _fitted(scores)
    u = torch.linspace(0.001, 0.999, 999)
    torch.testing.assert_close(sketch.cdf(sketch.icdf(u)), u, atol=1e-5, rtol=0)
    x = _calibrated(500, seed=1)
    torch.testing.assert_close(sketch.icdf(sketch.cdf(x)), x, atol=1e-5, rtol=1e-4)
    # the quantiles of the real scores spread over [0, 1] (their empirical CDF), unlike x itself
    u_real = sketch.cdf(scores)
    assert float(scores.quantile(0.9)) < 0.15
    for q in (0.1, 0.5, 0.9):
        assert float((u_real <= q).float().mean()) == pytest.approx(q, abs=0.01)
    # a quantile near 1 maps to the real upper tail, not to a score of ~1
    assert float(sketch.icdf(torch.tensor(0.6))) == pytest.approx(float(scores.quantile(0.6)), rel=0.05)


def test_the_maps_are_differentiable_and_monotone():
    sketch = _fitted(_calibrated(5_000))
    u = torch.linspace(0.0, 1.0, 101, requires_grad=True)
    x = sketch.icdf(u)
    assert torch.all(x.diff() >= 0)
    x.sum().backward()
    assert torch.all(u.grad[1:-1] > 0)


def test_sketches_merge_across_workers_by_summing_counts():
    """Two workers each count their half; the all-reduce sums the counts; both then equal the
    sketch of the whole batch (torch.distributed with gloo, two processes)."""
    scores = _calibrated(4_000).reshape(2, 2_000)
    whole = _fitted(scores.reshape(-1))
    mask = torch.ones(1, 2_000, dtype=torch.bool)
    halves = [ScoreQuantiles(), ScoreQuantiles()]
    counts = [h.batch_counts(scores[i:i + 1], mask) for i, h in enumerate(halves)]
    merged = counts[0] + counts[1]  # what dist.all_reduce(SUM) leaves on each rank
    for h in halves:
        h.update(merged, 0.9)
    for h in halves:
        torch.testing.assert_close(h.mass, whole.mass)


def test_the_ema_keeps_history_and_an_empty_batch_changes_nothing():
    sketch = ScoreQuantiles()
    low, high = torch.full((1, 10), 0.01), torch.full((1, 10), 0.9)
    mask = torch.ones(1, 10, dtype=torch.bool)
    sketch.update(sketch.batch_counts(low, mask), 0.5)
    assert float(sketch.cdf(torch.tensor(0.5))) == pytest.approx(1.0, abs=2e-3)  # replaces the prior
    sketch.update(sketch.batch_counts(high, mask), 0.5)
    assert float(sketch.cdf(torch.tensor(0.5))) == pytest.approx(0.5, abs=2e-3)  # half each
    before = sketch.mass.clone()
    sketch.update(sketch.batch_counts(high, torch.zeros_like(mask)), 0.5)
    assert torch.equal(sketch.mass, before) and int(sketch.num_updates) == 2


def test_the_sketch_is_saved_with_the_reranker():
    reranker = build_reranker(tiny_model("concat"), TINY_DATA)
    fitted = _fitted(_calibrated(3_000))
    reranker.score_quantiles.load_state_dict(fitted.state_dict())
    state = reranker.state_dict()
    assert {"score_quantiles.mass", "score_quantiles.num_updates"} <= state.keys()
    assert state["score_quantiles.mass"].shape == (BINS,)
    restored = build_reranker(tiny_model("concat"), TINY_DATA)
    restored.load_state_dict(state)
    x = torch.rand(100) * 0.2
    torch.testing.assert_close(restored.score_quantiles.cdf(x), fitted.cdf(x))


def test_batch_auc_sums_by_hand():
    from dnr.models.score_quantiles import batch_auc_sums

    scores = torch.tensor([[0.9, 0.1, 0.5, 0.0], [0.2, 0.8, 0.5, 0.0], [0.3, 0.3, 0.0, 0.0]])
    labels = torch.tensor([[1, 0, 0, 0], [1, 0, 1, 0], [1, 0, 0, 0]])
    mask = torch.tensor([[True, True, True, False], [True, True, True, False], [True, True, False, False]])
    # request 0: the positive beats both negatives -> 1; request 1: positives 0.2, 0.5 vs the
    # negative 0.8 -> 0; request 2: a tie -> 1/2
    sums = batch_auc_sums(scores, labels, mask)
    torch.testing.assert_close(sums, torch.tensor([1.5, 3.0]))
    none = batch_auc_sums(scores, torch.zeros_like(labels), mask)  # no positive: no request counts
    torch.testing.assert_close(none, torch.tensor([0.0, 0.0]))
    sketch = ScoreQuantiles()
    sketch.update(sketch.batch_counts(scores, mask), 0.9, sums)
    assert float(sketch.auc) == pytest.approx(0.5) and int(sketch.auc_updates) == 1
