"""The PRM reranker: shapes, padding invariance, empty history, score modes, the retriever floor."""

from __future__ import annotations

import dataclasses

from dataclasses import replace

import pytest
import torch

from dnr.config import RERANKER_FAMILIES, SCORE_MODES, ModelConfig
from dnr.models import PAD_LOGIT, RERANKERS, build_reranker, score_logit
from dnr.models import SCORE_MODES as SCORE_MODE_REGISTRY
from tests.unit.rerank_helpers import TINY_DATA, make_batch, one_thread, pad_batch, tiny_model  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def _randomised(score_mode: str) -> torch.nn.Module:
    """A reranker in eval mode whose parameters (zero-initialised head included) are all random,
    so that every input really reaches the logits."""
    torch.manual_seed(0)
    model = build_reranker(tiny_model(score_mode), TINY_DATA)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model.eval()


def test_registries_match_config_choices():
    assert set(SCORE_MODE_REGISTRY) == set(SCORE_MODES)
    assert set(RERANKERS) == set(RERANKER_FAMILIES)


@pytest.mark.parametrize("score_mode", SCORE_MODES)
def test_logits_shape_and_padding_value(score_mode):
    batch = make_batch()
    logits = build_reranker(tiny_model(score_mode), TINY_DATA)(batch)
    assert logits.shape == batch.item_ids.shape
    assert torch.isfinite(logits).all()
    assert (logits[~batch.mask] == PAD_LOGIT).all()


@pytest.mark.parametrize("score_mode", SCORE_MODES)
def test_padding_never_changes_real_logits(score_mode):
    model = _randomised(score_mode)
    batch = make_batch()
    padded = pad_batch(batch, extra_candidates=7, extra_history=3)
    with torch.no_grad():
        base, more = model(batch), model(padded)
    real = batch.mask
    torch.testing.assert_close(more[:, : batch.list_len][real], base[real], atol=1e-5, rtol=0)


def test_empty_history_and_empty_list_stay_finite():
    model = _randomised("denoise")
    batch = make_batch()
    batch.history_mask[:] = False
    batch.history_ids[:] = 0
    batch.mask[5] = False
    with torch.no_grad():
        logits = model(batch)
    assert torch.isfinite(logits).all()
    context = model.context(batch)
    assert context.items.shape == (*batch.item_ids.shape, 16)
    assert context.user.shape == (batch.num_requests, 16)


@pytest.mark.parametrize("score_mode", ["add", "denoise"])
def test_residual_modes_start_exactly_at_the_retriever_logit(score_mode):
    batch = make_batch()
    with torch.no_grad():
        logits = build_reranker(tiny_model(score_mode), TINY_DATA).eval()(batch)
    torch.testing.assert_close(logits[batch.mask], score_logit(batch.scores)[batch.mask])


def test_weight_mode_starts_at_the_retriever_order():
    batch = make_batch()
    with torch.no_grad():
        logits = build_reranker(tiny_model("weight"), TINY_DATA).eval()(batch)
    probs = torch.sigmoid(logits[batch.mask])
    torch.testing.assert_close(probs, batch.scores[batch.mask] / 2)


@pytest.mark.parametrize("score_mode", ["none", "concat"])
def test_unfloored_modes_start_tied(score_mode):
    batch = make_batch()
    with torch.no_grad():
        logits = build_reranker(tiny_model(score_mode), TINY_DATA)(batch)
    assert (logits[batch.mask] == 0).all()


@pytest.mark.parametrize("score_mode, uses_scores", [("none", False), ("concat", True), ("add", True),
                                                     ("weight", True), ("denoise", True)])
def test_which_modes_read_the_scores(score_mode, uses_scores):
    model = _randomised(score_mode)
    batch = make_batch()
    shuffled = dataclasses.replace(batch, scores=batch.scores.flip(1).masked_fill(~batch.mask, 0.0))
    with torch.no_grad():
        changed = not torch.allclose(model(batch)[batch.mask], model(shuffled)[batch.mask])
    assert changed == uses_scores


def test_list_longer_than_the_rank_embedding_is_refused():
    batch = pad_batch(make_batch(), extra_candidates=TINY_DATA.max_list_len)
    with pytest.raises(ValueError, match="max_list_len"):
        build_reranker(tiny_model(), TINY_DATA)(batch)


def test_model_config_names_the_bad_field():
    with pytest.raises(ValueError, match="model.score_mode='sum'"):
        ModelConfig(score_mode="sum")
    with pytest.raises(ValueError, match="model.n_heads=3"):
        ModelConfig(d_model=16, n_heads=3)


def _stacked(batch, other_scores: torch.Tensor):
    """The batch twice along B: its scores, then ``other_scores`` (what DNR fed before the
    shared-context forward)."""
    def twice(t):
        return torch.cat([t, t])

    return dataclasses.replace(
        batch, item_ids=twice(batch.item_ids), scores=torch.cat([batch.scores, other_scores]),
        labels=twice(batch.labels), mask=twice(batch.mask), label_mask=twice(batch.label_mask),
        history_ids=twice(batch.history_ids), history_mask=twice(batch.history_mask))


@pytest.mark.parametrize("score_mode", SCORE_MODES)
def test_extra_scores_give_the_logits_and_gradients_of_the_stacked_batch(score_mode):
    batch = make_batch()
    # sorted like a retriever's list, so the extra copy's own order is its positions
    other = torch.rand_like(batch.scores).sort(dim=1, descending=True).values.masked_fill(~batch.mask, 0.0)
    model = _randomised(score_mode)

    def run(forward):
        model.zero_grad()
        logits = forward()
        (logits.masked_fill(logits == PAD_LOGIT, 0.0).square().mean()).backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    shared, shared_grads = run(lambda: model(batch, extra_scores=other))
    stacked, stacked_grads = run(lambda: model(_stacked(batch, other)))
    assert shared.shape == (2 * batch.item_ids.shape[0], batch.list_len)
    torch.testing.assert_close(shared, stacked, atol=1e-6, rtol=1e-6)
    assert shared_grads.keys() == stacked_grads.keys() and shared_grads
    for name, grad in shared_grads.items():
        torch.testing.assert_close(grad, stacked_grads[name], atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("score_mode", SCORE_MODES)
def test_the_extra_copy_is_ranked_by_its_own_scores(score_mode):
    """DNR's synthetic copy gets the rank embeddings of its synthetic order, not the real list's:
    its logits are those of the lists scored alone with ``rank_by_scores``."""
    batch = make_batch()
    other = torch.rand_like(batch.scores).masked_fill(~batch.mask, 0.0)  # not in list order
    model = _randomised(score_mode).eval()
    with torch.no_grad():
        shared = model(batch, extra_scores=other)
        alone = model(replace(batch, scores=other), rank_by_scores=True)
        by_position = model(replace(batch, scores=other))
    torch.testing.assert_close(shared[batch.item_ids.shape[0]:], alone, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(shared[batch.item_ids.shape[0]:], by_position, atol=1e-4)
