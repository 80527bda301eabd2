"""The synthetic world: determinism, the exact schema, stateless ids, and the measurable
properties the rerankers rely on (retriever AUC, oracle vs retriever NDCG@6, click rate)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import tracemalloc

import numpy as np
import pyarrow as pa
import pytest

from dnr.datasets.synth import make_requests
from dnr.datasets.synth_world import WorldConfig, item_ids
from dnr.schemas import REQUEST_LOGS as RL

DAY = dt.date(2024, 3, 1)
SEEDS = (0, 1, 2)
N_STATS = 2_000


# --- small numpy helpers (the metrics module is separate; these keep this test self-contained)


def padded(table: pa.Table, column: str, fill=0) -> np.ndarray:
    """[B, Lmax] numpy array of a list column, right-padded with ``fill``."""
    arr = table[column].combine_chunks()
    lengths = arr.value_lengths().to_numpy()
    values = arr.flatten().to_numpy(zero_copy_only=False)
    out = np.full((len(arr), lengths.max()), fill, dtype=values.dtype)
    out[np.arange(lengths.max())[None, :] < lengths[:, None]] = values
    return out


def pooled_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties."""
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0
    ranks = avg_rank[inverse]
    pos = labels.astype(bool)
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def mean_ndcg_at_k(order_scores: np.ndarray, labels: np.ndarray, valid: np.ndarray, k: int = 6) -> float:
    """Mean NDCG@k with binary labels over requests with at least one click; [B, L] inputs."""
    keep = (labels * valid).sum(axis=1) > 0
    s, y = np.where(valid, order_scores, -np.inf)[keep], (labels * valid)[keep].astype(float)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    ranked = np.take_along_axis(y, np.argsort(-s, axis=1, kind="stable")[:, :k], axis=1)
    ideal = -np.sort(-y, axis=1)[:, :k]
    return float(((ranked * discount).sum(1) / (ideal * discount).sum(1)).mean())


def world_stats(config: WorldConfig, n: int = N_STATS) -> dict[str, float]:
    t = make_requests(config, DAY, np.arange(n))
    scores = padded(t, RL.col.retriever_scores, np.nan)
    valid = ~np.isnan(scores)
    labels = padded(t, RL.col.labels)
    prob = padded(t, RL.col.true_click_prob)
    position = np.broadcast_to(-np.arange(scores.shape[1], dtype=float), scores.shape)
    shuffled = np.random.default_rng(0).random(scores.shape)
    return {
        "auc": pooled_auc(scores[valid], labels[valid]),
        "click_rate": float(labels[valid].mean()),
        "ndcg_retriever": mean_ndcg_at_k(position, labels, valid),
        "ndcg_oracle": mean_ndcg_at_k(prob, labels, valid),
        "ndcg_random": mean_ndcg_at_k(shuffled, labels, valid),
    }


# --- properties of the world


@pytest.mark.parametrize("seed", SEEDS)
def test_world_has_realistic_retriever_and_room_for_a_reranker(seed):
    s = world_stats(WorldConfig(seed=seed))
    # the paper's MF retrievers have AUC 0.79-0.90 against the labels
    assert 0.75 <= s["auc"] <= 0.92, s
    # feeds: a few percent of shown candidates are clicked
    assert 0.02 <= s["click_rate"] <= 0.10, s
    # the truth has signal the retriever lacks: the oracle order is far better ...
    assert s["ndcg_oracle"] >= s["ndcg_retriever"] + 0.15, s
    # ... yet the retriever score is informative (far better than a random order)
    assert s["ndcg_retriever"] >= s["ndcg_random"] + 0.10, s


def test_same_seed_same_rows_and_other_seed_other_rows():
    config = WorldConfig(seed=7)
    a = make_requests(config, DAY, np.arange(300))
    assert a.equals(make_requests(WorldConfig(seed=7), DAY, np.arange(300)))
    other = make_requests(WorldConfig(seed=8), DAY, np.arange(300))
    top_scores = [padded(t, RL.col.retriever_scores)[:, 0] for t in (a, other)]
    assert not np.array_equal(*top_scores)
    next_day = make_requests(config, DAY + dt.timedelta(days=1), np.arange(300))
    assert not set(a[RL.col.request_id].to_pylist()) & set(next_day[RL.col.request_id].to_pylist())


def test_rows_are_stateless_a_slice_alone_equals_the_same_slice_of_a_larger_batch():
    config = WorldConfig(seed=3)
    whole = make_requests(config, DAY, np.arange(2_000))
    part = make_requests(config, DAY, np.arange(1_000, 1_100))
    assert part.equals(whole.slice(1_000, 100))


@pytest.mark.parametrize("shown_k", [0, 10])
def test_schema_equals_request_logs_exactly(shown_k):
    t = make_requests(WorldConfig(shown_k=shown_k), DAY, np.arange(50))
    assert t.schema.equals(RL.arrow, check_metadata=True)
    assert make_requests(WorldConfig(), DAY, np.arange(0)).schema.equals(RL.arrow, check_metadata=True)


def test_rows_satisfy_the_request_logs_contract():
    config = WorldConfig(seed=1)
    t = make_requests(config, DAY, np.arange(500))
    rows = t.to_pylist()
    ids = [r[RL.col.request_id] for r in rows]
    assert len(set(ids)) == len(ids) and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert {r[RL.col.ds] for r in rows} == {DAY.isoformat()}
    assert all(r[RL.col.event_time].date() == DAY and r[RL.col.event_time].tzinfo is not None for r in rows)
    assert t[RL.col.exposed].null_count == len(rows)  # by default every candidate is labelled
    history_lengths = []
    for r in rows:
        cand, scores = r[RL.col.candidate_item_ids], np.array(r[RL.col.retriever_scores])
        n = len(cand)
        assert n == config.list_len and len(set(cand)) == n
        assert len(r[RL.col.labels]) == len(r[RL.col.true_click_prob]) == n == len(scores)
        assert np.all((scores >= 0) & (scores <= 1)) and np.all(np.diff(scores) <= 0)
        assert set(r[RL.col.labels]) <= {0, 1}
        assert all(0 < p < 1 for p in r[RL.col.true_click_prob])
        history_lengths.append(len(r[RL.col.history_item_ids]))
    assert max(history_lengths) <= config.history_max_len
    assert 0.03 < np.mean(np.array(history_lengths) == 0) < 0.2  # some users have no history
    assert np.mean(history_lengths) > 10
    # industrial-looking ids: spread over the int64 range, not small consecutive integers
    flat = padded(t, RL.col.candidate_item_ids).ravel()
    assert flat.min() >= 0 and np.median(flat) > 2**50
    history_ids = set(t[RL.col.history_item_ids].combine_chunks().flatten().to_pylist())
    assert history_ids <= set(item_ids(config, np.arange(config.num_items)).tolist())


def test_item_ids_are_unique_and_stable():
    config = WorldConfig(seed=5)
    ids = item_ids(config, np.arange(200_000))
    assert ids.dtype == np.int64 and len(np.unique(ids)) == len(ids)
    assert np.array_equal(ids[1234:1240], item_ids(config, np.arange(1234, 1240)))


def test_shown_k_labels_only_the_top_k():
    t = make_requests(WorldConfig(shown_k=6), DAY, np.arange(400))
    exposed = padded(t, RL.col.exposed)
    labels = padded(t, RL.col.labels)
    assert exposed[:, :6].all() and not exposed[:, 6:].any()
    assert labels[:, 6:].sum() == 0 and labels[:, :6].sum() > 0
    # the world is the same; only what was shown and labelled changes
    full = make_requests(WorldConfig(shown_k=0), DAY, np.arange(400))
    assert t[RL.col.candidate_item_ids].equals(full[RL.col.candidate_item_ids])
    assert np.array_equal(labels[:, :6], padded(full, RL.col.labels)[:, :6])


def _peak_bytes(config: WorldConfig, n: int) -> int:
    tracemalloc.start()
    try:
        make_requests(config, DAY, np.arange(n))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_billion_users_cost_no_more_memory_than_a_thousand():
    t = make_requests(WorldConfig(num_users=10**9), DAY, np.arange(300))
    assert len(set(t[RL.col.user_id].to_pylist())) > 250  # users really come from a huge world
    peak_huge = _peak_bytes(WorldConfig(num_users=10**9), 300)
    assert peak_huge <= 1.1 * _peak_bytes(WorldConfig(num_users=1_000), 300)


def test_item_memory_is_bounded_by_the_batch_not_the_catalog():
    # with a huge catalog nearly every sampled item is distinct: the worst case per request
    peak_1e9 = _peak_bytes(WorldConfig(num_items=10**9), 500)
    assert peak_1e9 < 500 * 150 * 2**10, peak_1e9  # < 150 KB per request
    assert peak_1e9 <= 1.2 * _peak_bytes(WorldConfig(num_items=10**7), 500)


def test_a_small_catalog_gives_shorter_lists_not_repeats():
    config = WorldConfig(num_items=60, pool_size=60, history_max_len=20, history_pool=40)
    t = make_requests(config, DAY, np.arange(100))
    lengths = t[RL.col.candidate_item_ids].combine_chunks().value_lengths().to_numpy()
    assert lengths.min() >= 1 and lengths.max() <= config.list_len
    assert all(len(set(c)) == len(c) for c in t[RL.col.candidate_item_ids].to_pylist())
    assert t.schema.equals(RL.arrow, check_metadata=True)


@pytest.mark.parametrize(
    "field, value",
    [("pool_size", 10), ("num_items", 0), ("retriever_rank", 64), ("topic_share", 1.0),
     ("shown_k", 51), ("latent_dim", 15), ("empty_history_frac", 1.5), ("retriever_noise", -0.1)],
)  # fmt: skip
def test_config_validation_names_the_bad_field(field, value):
    with pytest.raises(ValueError, match=f"WorldConfig.{field}="):
        dataclasses.replace(WorldConfig(), **{field: value})
