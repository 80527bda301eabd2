"""The synthetic world's request logs: :func:`make_requests`, one batch of any day. The world's
parameters and its users and items are :mod:`dnr.datasets.synth_world`; writing days of it into
a lake is :mod:`dnr.datasets.synth_lake`.

The world, per request (all randomness is stateless hashing of ids, so any slice of any day can
be generated alone, on any worker, in any order, and ``num_users=10**9`` costs nothing):

* **Users and items** (:mod:`dnr.datasets.synth_world`, with :class:`WorldConfig`) have latent
  vectors derived from their index by seeded hashing, never stored; items have topics, a
  popularity rank and an intrinsic quality.
* **Retriever** (deliberately weaker): it sees a noisy rank-``retriever_rank`` view of the same
  vectors, over-trusts popularity, knows nothing of quality, position or list context, and adds
  per-request noise. It scores a popularity-biased pool of ``pool_size`` items and keeps its top
  ``list_len`` in descending score order; scores are a sigmoid, so in [0, 1].
* **Truth**: ``logit = base + user bias + affinity·<u, v> + popularity + quality
  − position_weight·log(1 + position) − redundancy·(similarity to the neighbouring items)``, with
  the position and the neighbours taken from the logged (retriever) order. Labels are Bernoulli
  draws of ``sigmoid(logit)``, which is stored as the oracle ``true_click_prob``.
* **History**: the user's recent items of the day, drawn from a popularity-biased sample by
  true affinity (items the user likes), oldest first, 0..``history_max_len`` long.

So a reranker has signal the retriever lacks: the full-rank affinity (through item embeddings and
the history), item quality (learnable per id), position, and list context; and the retriever
score is informative but noisy, DNR's premise.

:func:`make_requests` is the pure-numpy core (one batch as a ``pa.Table`` with exactly
``REQUEST_LOGS.arrow``); :func:`dnr.datasets.synth_lake.write_request_logs` is the Ray Data
driver that writes days of it into the lake's Delta table.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from dnr.data.hashing import splitmix64
from dnr.datasets.synth_world import (
    ItemFeatures,
    WorldConfig,
    item_features,
    item_ids,
    normals,
    power_law_index,
    uniforms,
    user_features,
    user_ids,
)
from dnr.schemas import REQUEST_LOGS as RL

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_US_PER_DAY = 86_400 * 1_000_000
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# One batch of requests
# --------------------------------------------------------------------------------------------


def _distinct_mask(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row and mark repeats: (sorted [B, P], True where the entry is a first occurrence)."""
    srt = np.sort(index, axis=1)
    first = np.ones_like(srt, dtype=bool)
    first[:, 1:] = srt[:, 1:] != srt[:, :-1]
    return srt, first


def _top(score: np.ndarray, valid: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column order of each row's top-k valid scores, descending: (order [B, k], valid [B, k])."""
    masked = np.where(valid, score, -np.inf)
    if k < masked.shape[1]:
        part = np.argpartition(-masked, k - 1, axis=1)[:, :k]  # the top k, unordered
    else:
        part = np.broadcast_to(np.arange(masked.shape[1]), masked.shape)
    order = np.take_along_axis(part, np.argsort(-np.take_along_axis(masked, part, axis=1), axis=1), axis=1)
    return order, np.take_along_axis(valid, order, axis=1)


def day_key(config: WorldConfig, day: dt.date) -> int:
    """The 64-bit key of a day; request keys are ``splitmix64(index, day_key)``."""
    return int(splitmix64(np.array([day.toordinal()], dtype=np.uint64), config.salts["day"])[0])


def make_requests(config: WorldConfig, day: dt.date, request_index: np.ndarray) -> pa.Table:
    """Requests ``request_index`` (int array, any order, each in [0, 2**63)) of ``day``.

    Pure numpy, no Ray. Row i depends only on (config, day, request_index[i]), so generating
    a slice alone equals the same slice of a larger batch. Returns a table whose schema equals
    ``REQUEST_LOGS.arrow``. Working memory is ~30 KB per request with the defaults, at most
    ~100 KB when the catalog is so large that every sampled item is distinct.
    """
    c, s = config, config.salts
    idx = np.asarray(request_index, dtype=np.int64)
    if idx.ndim != 1 or (idx.size and idx.min() < 0):
        raise ValueError("request_index must be a 1-d array of non-negative integers")
    b, L = idx.size, c.list_len
    rkey = splitmix64(idx.astype(np.uint64), day_key(c, day))  # bijective in idx: unique per day
    user_u, time_u = uniforms(rkey, 2, s["request"]).T
    user = power_law_index(user_u, c.num_users, c.user_activity_skew)
    u_vec, u_bias, u_retr = user_features(c, user)

    # The retriever's pool and the history sample; item features once per distinct item.
    pool, pool_first = _distinct_mask(_item_sample(c, rkey, c.pool_size, s["pool"]))
    hkey = splitmix64(user.astype(np.uint64), day_key(c, day) ^ s["history"])  # per (user, day)
    hist, hist_first = _distinct_mask(_item_sample(c, hkey, c.history_pool, s["history"]))
    distinct, inverse = np.unique(np.concatenate([pool.ravel(), hist.ravel()]), return_inverse=True)
    items = item_features(c, distinct)
    pool = inverse[: pool.size].reshape(pool.shape)  # from here on: rows of `items`
    hist = inverse[pool.size :].reshape(hist.shape)

    # Retriever: noisy low-rank affinity + over-trusted popularity + per-request noise.
    retr_logit = _retriever_logit(c, rkey, u_retr, items, pool)
    order, valid = _top(retr_logit, pool_first, L)  # [B, L]; invalid (too few distinct) last
    cand = np.take_along_axis(pool, order, axis=1)
    score = _sigmoid(c.retriever_scale * np.take_along_axis(retr_logit, order, axis=1) + c.retriever_offset)

    # Truth, in the logged order (position and neighbours are those of the shown list).
    position = np.arange(L, dtype=np.float64)
    prob = _sigmoid(_true_logit(c, u_vec, u_bias, items, cand, valid, position))
    labels = uniforms(rkey, L, s["label"]) < prob
    exposed = None
    if c.shown_k:
        exposed = np.broadcast_to(position[None, :] < c.shown_k, (b, L))
        labels &= exposed  # unexposed candidates got no feedback

    h_items, h_keep = _history(c, u_vec, items, hist, hist_first, hkey)
    event_us = day_start_us(day) + (time_u * _US_PER_DAY).astype(np.int64)
    columns = {
        RL.col.request_id: _request_ids(rkey, s["request_id"]),
        RL.col.user_id: pa.array(user_ids(c, user)),
        RL.col.event_time: pa.array(event_us, type=pa.timestamp("us", tz="UTC")),
        RL.col.ds: pa.repeat(pa.scalar(day.isoformat()), b),
        RL.col.history_item_ids: _ragged(item_ids(c, distinct[h_items]), h_keep),
        RL.col.candidate_item_ids: _ragged(item_ids(c, distinct[cand]), valid),
        RL.col.retriever_scores: _ragged(score.astype(np.float32), valid),
        RL.col.labels: _ragged(labels.astype(np.int8), valid),
        RL.col.exposed: pa.nulls(b, pa.list_(pa.bool_())) if exposed is None else _ragged(exposed, valid),
        RL.col.true_click_prob: _ragged(prob.astype(np.float32), valid),
    }
    return pa.table(columns).select(RL.arrow.names).cast(RL.arrow)


def _retriever_logit(c: WorldConfig, rkey: np.ndarray, u_retr: np.ndarray, items: ItemFeatures,
                     pool: np.ndarray) -> np.ndarray:
    """[B, pool] the retriever's logits: noisy low-rank affinity, over-trusted popularity, noise."""
    noise = normals(rkey, c.pool_size + c.pool_size % 2, c.salts["retr_noise"])[:, : c.pool_size]
    return (np.einsum("br,bpr->bp", u_retr, items.retr_vec[pool]) * np.sqrt(c.latent_dim / c.retriever_rank)
            + c.retriever_popularity_weight * items.popularity[pool]
            + c.retriever_noise * noise)


def _true_logit(c: WorldConfig, u_vec: np.ndarray, u_bias: np.ndarray, items: ItemFeatures, cand: np.ndarray,
                valid: np.ndarray, position: np.ndarray) -> np.ndarray:
    """[B, L] the click logit of each shown candidate, in the logged order (its position and
    its neighbours are those of the shown list)."""
    unit = items.vec[cand] * items.inv_norm[cand][..., None]
    return (c.base_logit
            + u_bias[:, None]
            + c.affinity_weight * np.einsum("bd,bld->bl", u_vec, items.vec[cand])
            + c.popularity_weight * items.popularity[cand]
            + c.quality_weight * items.quality[cand]
            - c.position_weight * np.log1p(position)[None, :]
            - c.redundancy_weight * _neighbour_similarity(unit, valid))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _item_sample(c: WorldConfig, keys: np.ndarray, n: int, salt: int) -> np.ndarray:
    """[B, n] item indices drawn by popularity (with repeats)."""
    return power_law_index(uniforms(keys, n, salt), c.num_items, c.item_popularity_skew)


def _neighbour_similarity(unit: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """[B, L] mean positive cosine similarity of each item to its valid neighbours in the list;
    ``unit`` [B, L, d] are unit-norm item vectors in the shown order."""
    pair_valid = valid[:, :-1] & valid[:, 1:]
    sim = np.where(pair_valid, np.maximum(np.einsum("bld,bld->bl", unit[:, :-1], unit[:, 1:]), 0.0), 0.0)
    total = np.zeros(valid.shape)
    count = np.zeros(valid.shape)
    total[:, :-1] += sim
    total[:, 1:] += sim
    count[:, :-1] += pair_valid
    count[:, 1:] += pair_valid
    return total / np.maximum(count, 1.0)


def _history(c: WorldConfig, u_vec, items: ItemFeatures, hist, hist_first, hkey) -> tuple[np.ndarray, np.ndarray]:
    """The user's recent items, oldest first: ([B, H] rows of ``items``, [B, H] keep mask).

    The best-liked of the sample (true affinity + Gumbel noise), a random length per (user, day),
    then a random time order.
    """
    s, H = c.salts, c.history_max_len
    pick_u = uniforms(hkey, c.history_pool + 1, s["history_pick"])
    liking = np.einsum("bd,bhd->bh", u_vec, items.vec[hist]) - 0.5 * np.log(-np.log(pick_u[:, 1:]))
    order, valid = _top(liking, hist_first, H)
    length_u = pick_u[:, 0]
    has_history = length_u >= c.empty_history_frac
    frac = (length_u - c.empty_history_frac) / max(1.0 - c.empty_history_frac, 1e-12)
    length = np.where(has_history, 1 + np.minimum((frac * H).astype(np.int64), H - 1), 0)
    keep = valid & (np.arange(H)[None, :] < length[:, None])
    time_order = np.argsort(np.where(keep, uniforms(hkey, H, s["history_time"]), np.inf), axis=1)
    return (
        np.take_along_axis(np.take_along_axis(hist, order, axis=1), time_order, axis=1),
        np.take_along_axis(keep, time_order, axis=1),
    )


def day_start_us(day: dt.date) -> int:
    """Microseconds since the epoch of the day's UTC midnight."""
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
    return (midnight - _EPOCH) // dt.timedelta(microseconds=1)


def _ragged(values: np.ndarray, keep: np.ndarray) -> pa.ListArray:
    """Rows of ``values`` [B, W] where ``keep`` (a prefix of each row) is True, as a list array."""
    offsets = np.zeros(keep.shape[0] + 1, dtype=np.int32)
    np.cumsum(keep.sum(axis=1), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.ascontiguousarray(values)[keep]))


def _request_ids(rkey: np.ndarray, salt: int) -> pa.StringArray:
    """128-bit lowercase hex ids: the request key (unique within a day) and a second hash."""
    words = np.stack([rkey, splitmix64(rkey, salt)], axis=1)  # [B, 2] uint64
    shifts = np.arange(60, -4, -4, dtype=np.uint64)  # 16 nibbles per word, most significant first
    nibbles = (words[:, :, None] >> shifts) & np.uint64(0xF)
    chars = _HEX[nibbles.reshape(len(rkey), 32).astype(np.intp)]
    offsets = np.arange(0, 32 * (len(rkey) + 1), 32, dtype=np.int32)
    return pa.StringArray.from_buffers(len(rkey), pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))
