"""A synthetic two-stage recommender world that writes ``request_logs``.

The world, per request (all randomness is stateless hashing of ids, so any slice of any day can
be generated alone, on any worker, in any order, and ``num_users=10**9`` costs nothing):

* **Users and items** have latent vectors ``u, v ∈ R^d`` derived from their index by seeded
  hashing (Box-Muller), never stored. Items belong to topics (a shared topic direction plus an
  individual part), have a popularity rank (a small index is a popular item) and an intrinsic
  quality. Item ids are the index hashed to an arbitrary-looking positive int64.
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
``REQUEST_LOGS.arrow``); :func:`write_request_logs` is the Ray Data driver that writes days of
it into the lake's Delta table.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from functools import cached_property

import numpy as np
import pyarrow as pa

from dnr.data.hashing import splitmix64
from dnr.schemas import PARTITION_COLUMN
from dnr.schemas import REQUEST_LOGS as RL
from dnr.storage import Lake

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_US_PER_DAY = 86_400 * 1_000_000
_TWO_PI = 2.0 * np.pi
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)

# Independent random streams: each is a salt mixed with the world seed (see WorldConfig.salts).
_STREAMS = (
    "item_id", "item_vec", "item_quality", "item_topic", "topic_vec", "retr_item",
    "user_id", "user_vec", "user_bias", "retr_user", "day", "request_id",
    "request", "pool", "retr_noise", "label", "history", "history_pick", "history_time",
)  # fmt: skip


@dataclass(frozen=True)
class WorldConfig:
    """Parameters of the synthetic world; ``__post_init__`` names a bad field and value.

    The defaults are tuned so that (seeds 0-5, 2,000 requests each; tests/unit/test_synth.py):
    the retriever's AUC against the labels, pooled over all candidates, is 0.79-0.81 (the DNR
    paper's MF retrievers: 0.79-0.90); 4.8-6.4% of candidates are clicked (about 20% of
    requests have no click); NDCG@6 is ≈ 0.40 in retriever order, ≈ 0.71 in oracle order
    (``true_click_prob``) and ≈ 0.10 in random order. Removing one term from the oracle costs
    NDCG@6: affinity 0.41, quality 0.05, position 0.04, list context 0.02, popularity 0.01.
    """

    seed: int = 0
    """World seed: same seed, day and request index, same row."""
    num_users: int = 100_000
    """Users in the world; only hashed, never materialised, so 10**9 is as cheap as 10**3."""
    num_items: int = 100_000
    """Items in the world; only hashed, never materialised."""
    list_len: int = 50
    """L: candidates the retriever keeps per request (shorter only if the pool has fewer
    distinct items)."""
    pool_size: int = 300
    """Items the retriever scores per request, sampled by popularity (with repeats removed)."""
    latent_dim: int = 16
    """d: dimension of the true user and item vectors."""
    num_topics: int = 16
    """Item topics; items of one topic share a direction, which makes lists redundant."""
    topic_share: float = 0.6
    """Fraction of an item vector's variance that comes from its topic direction."""
    item_popularity_skew: float = 2.5
    """γ of the popularity law: an item index is ``num_items·U^γ``; larger is more skewed."""
    user_activity_skew: float = 1.5
    """Same law for which user sends a request (a few users are very active)."""
    base_logit: float = -6.0
    """Intercept of the true click logit; sets the click rate."""
    user_bias_std: float = 0.3
    """Std of a per-user click propensity (invisible to the retriever)."""
    affinity_weight: float = 3.0
    """Weight of the true affinity ``<u, v>`` (unit variance) in the click logit."""
    popularity_weight: float = 0.3
    """Weight of the standardised log-popularity in the click logit."""
    quality_weight: float = 0.8
    """Weight of the item's intrinsic quality (N(0, 1), invisible to the retriever)."""
    position_weight: float = 0.6
    """Position bias: the click logit drops by this times ``log(1 + position)``."""
    redundancy_weight: float = 2.5
    """List context: the click logit drops by this times the mean positive cosine similarity
    to the neighbouring items in the shown order."""
    retriever_rank: int = 12
    """Rank of the retriever's view: it sees only the first r coordinates of the vectors."""
    retriever_embedding_noise: float = 0.3
    """Std of the fixed per-user and per-item error on the retriever's vectors (relative to
    the vectors' own per-coordinate std)."""
    retriever_popularity_weight: float = 0.6
    """Weight the retriever gives to popularity (the truth gives ``popularity_weight``)."""
    retriever_noise: float = 0.5
    """Std of per-request noise on each retriever logit (the "noisy score" of DNR)."""
    retriever_scale: float = 1.0
    """Slope of the sigmoid that maps the retriever logit to a score in [0, 1]."""
    retriever_offset: float = -1.5
    """Intercept of that sigmoid (scores of the kept top-L then spread over roughly 0.2-0.95)."""
    history_max_len: int = 50
    """Longest history; the length is uniform in 1..max for users with a history."""
    empty_history_frac: float = 0.1
    """Fraction of (user, day) pairs with an empty history (new or returning-after-long users)."""
    history_pool: int = 150
    """Items sampled per (user, day) from which the history keeps the ones the user likes most."""
    shown_k: int = 0
    """Exposure: 0 = every candidate shown and labelled (``exposed`` null); K > 0 = only the
    top-K of the logged order is shown (``exposed`` set, other labels 0)."""

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int if f.type == "int" else (int, float)):
                _bad(f.name, value, f"must be {'an int' if f.type == 'int' else 'a number'}")
        positive = ("num_users", "num_items", "list_len", "pool_size", "latent_dim", "num_topics",
                    "retriever_rank", "history_max_len", "history_pool", "item_popularity_skew",
                    "user_activity_skew", "retriever_scale")  # fmt: skip
        for name in positive:
            if not getattr(self, name) > 0:
                _bad(name, getattr(self, name), "must be > 0")
        non_negative = ("user_bias_std", "affinity_weight", "popularity_weight", "quality_weight",
                        "position_weight", "redundancy_weight", "retriever_embedding_noise",
                        "retriever_popularity_weight", "retriever_noise", "shown_k")  # fmt: skip
        for name in non_negative:
            if not getattr(self, name) >= 0:
                _bad(name, getattr(self, name), "must be >= 0")
        if not 0 <= self.topic_share < 1:
            _bad("topic_share", self.topic_share, "must be in [0, 1)")
        if not 0 <= self.empty_history_frac <= 1:
            _bad("empty_history_frac", self.empty_history_frac, "must be in [0, 1]")
        if self.latent_dim % 2:
            _bad("latent_dim", self.latent_dim, "must be even (Box-Muller makes normals in pairs)")
        if self.retriever_rank > self.latent_dim:
            _bad("retriever_rank", self.retriever_rank, f"must be <= latent_dim={self.latent_dim}")
        if self.num_items < self.list_len:
            _bad("num_items", self.num_items, f"must be >= list_len={self.list_len}")
        if self.pool_size < self.list_len:
            _bad("pool_size", self.pool_size, f"must be >= list_len={self.list_len}")
        if self.history_pool < self.history_max_len:
            _bad("history_pool", self.history_pool, f"must be >= history_max_len={self.history_max_len}")
        if self.shown_k > self.list_len:
            _bad("shown_k", self.shown_k, f"must be <= list_len={self.list_len}")
        for name in ("num_users", "num_items"):
            if getattr(self, name) > 2**53:
                _bad(name, getattr(self, name), "must be <= 2**53 (indices are drawn in float64)")
        if not -(2**63) <= self.seed < 2**63:
            _bad("seed", self.seed, "must fit in int64")

    @cached_property
    def salts(self) -> dict[str, int]:
        """One 64-bit salt per random stream, derived from the seed."""
        mixed = splitmix64(np.arange(len(_STREAMS), dtype=np.uint64), self.seed)
        return dict(zip(_STREAMS, (int(s) for s in mixed)))


def _bad(name: str, value, why: str):
    raise ValueError(f"WorldConfig.{name}={value!r}: {why}")


# --------------------------------------------------------------------------------------------
# Stateless random numbers
# --------------------------------------------------------------------------------------------


def _mix(keys: np.ndarray, n: int, salt: int) -> np.ndarray:
    """``[..., n]`` independent uint64 hashes of each key, for stream ``salt``."""
    base = splitmix64(keys, salt)[..., None]
    return splitmix64(base ^ np.arange(n, dtype=np.uint64))


def _uniforms(keys: np.ndarray, n: int, salt: int) -> np.ndarray:
    """``[..., n]`` float64 uniforms in (0, 1)."""
    return ((_mix(keys, n, salt) >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / (1 << 53))


def _normals(keys: np.ndarray, d: int, salt: int) -> np.ndarray:
    """``[..., d]`` float64 standard normals per key (Box-Muller, two per 64-bit hash)."""
    h = _mix(keys, d // 2, salt)
    u1 = ((h >> np.uint64(32)).astype(np.float64) + 0.5) * (1.0 / (1 << 32))
    u2 = (h & np.uint64(0xFFFFFFFF)).astype(np.float64) * (1.0 / (1 << 32))
    r = np.sqrt(-2.0 * np.log(u1))
    return np.concatenate([r * np.cos(_TWO_PI * u2), r * np.sin(_TWO_PI * u2)], axis=-1)


def _power_law_index(u: np.ndarray, n: int, skew: float) -> np.ndarray:
    """Index in [0, n) with density ∝ x^(1/skew − 1): index 0 is the most frequent."""
    return np.minimum((n * u**skew).astype(np.int64), n - 1)


def _public_ids(index: np.ndarray, salt: int) -> np.ndarray:
    """Index -> arbitrary-looking non-negative int64 id, distinct for distinct indices.

    splitmix64 is a bijection of uint64; re-hashing the values that land in the upper half
    (cycle walking) makes it a bijection of [0, 2**63), so ids never collide. Each round
    halves the values left, so the loop runs ~log2(n) vectorised rounds.
    """
    h = splitmix64(index, salt)
    high = h >= np.uint64(2**63)
    while high.any():
        h[high] = splitmix64(h[high], salt)
        high[high] = h[high] >= np.uint64(2**63)
    return h.astype(np.int64)


def item_ids(config: WorldConfig, index: np.ndarray) -> np.ndarray:
    """The int64 id of item ``index`` (for tests and tools; generation keeps the index)."""
    return _public_ids(np.asarray(index, dtype=np.int64), config.salts["item_id"])


def user_ids(config: WorldConfig, index: np.ndarray) -> np.ndarray:
    """The int64 id of user ``index``."""
    return _public_ids(np.asarray(index, dtype=np.int64), config.salts["user_id"])


# --------------------------------------------------------------------------------------------
# The world's users and items (computed on demand for the indices a batch touches)
# --------------------------------------------------------------------------------------------


#: items whose features are hashed at once; bounds the float64 temporaries (~0.5 KB per item)
_ITEM_CHUNK = 16_384


@dataclass
class _Items:
    """Features of a set of item indices (the distinct items of one batch), float32 to halve
    the [B, P, d] gathers that dominate the cost. Shapes: [N, ...]."""

    vec: np.ndarray  # [N, d] true latent vector; <u, v> has unit variance
    inv_norm: np.ndarray  # [N] 1 / |vec| (for the cosine similarity of list neighbours)
    popularity: np.ndarray  # [N] standardised log-popularity (mean 0, std 1 under the pool law)
    quality: np.ndarray  # [N] intrinsic appeal, N(0, 1)
    retr_vec: np.ndarray  # [N, r] the retriever's noisy low-rank view of vec


def _items(c: WorldConfig, index: np.ndarray) -> _Items:
    s, d, r, n = c.salts, c.latent_dim, c.retriever_rank, len(index)
    scale = d**-0.25  # so <u, v> has unit variance
    topic_vecs = np.sqrt(c.topic_share) * _normals(np.arange(c.num_topics), d, s["topic_vec"])
    out = _Items(*(np.empty(shape, np.float32) for shape in ((n, d), n, n, n, (n, r))))
    for lo in range(0, n, _ITEM_CHUNK):
        idx = index[lo : lo + _ITEM_CHUNK]
        rows = slice(lo, lo + len(idx))
        topic = (splitmix64(idx, s["item_topic"]) % np.uint64(c.num_topics)).astype(np.int64)
        vec = scale * (topic_vecs[topic] + np.sqrt(1 - c.topic_share) * _normals(idx, d, s["item_vec"]))
        out.vec[rows] = vec
        out.inv_norm[rows] = 1.0 / np.linalg.norm(vec, axis=-1)
        noise = _normals(idx, r + r % 2, s["retr_item"])[:, :r]
        out.retr_vec[rows] = vec[:, :r] + scale * c.retriever_embedding_noise * noise
        # -log of the index's quantile is Exp(mean=skew) under the pool law: standardise it.
        popularity = -np.log((idx + 0.5) / c.num_items) / c.item_popularity_skew - 1.0
        out.popularity[rows] = np.minimum(popularity, 4.0)
        out.quality[rows] = _normals(idx, 2, s["item_quality"])[:, 0]
    return out


def _users(c: WorldConfig, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true vector [B, d], click bias [B], retriever's view [B, r]) of user indices."""
    s, d, r = c.salts, c.latent_dim, c.retriever_rank
    scale = d**-0.25
    vec = scale * _normals(index, d, s["user_vec"])
    bias = c.user_bias_std * _normals(index, 2, s["user_bias"])[:, 0]
    noise = _normals(index, r + r % 2, s["retr_user"])[:, :r]
    retr = vec[:, :r] + scale * c.retriever_embedding_noise * noise
    return vec.astype(np.float32), bias, retr.astype(np.float32)


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


# --------------------------------------------------------------------------------------------
# One batch of requests
# --------------------------------------------------------------------------------------------


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
    user_u, time_u = _uniforms(rkey, 2, s["request"]).T
    user = _power_law_index(user_u, c.num_users, c.user_activity_skew)
    u_vec, u_bias, u_retr = _users(c, user)

    # The retriever's pool and the history sample; item features once per distinct item.
    pool, pool_first = _distinct_mask(_item_sample(c, rkey, c.pool_size, s["pool"]))
    hkey = splitmix64(user.astype(np.uint64), day_key(c, day) ^ s["history"])  # per (user, day)
    hist, hist_first = _distinct_mask(_item_sample(c, hkey, c.history_pool, s["history"]))
    distinct, inverse = np.unique(np.concatenate([pool.ravel(), hist.ravel()]), return_inverse=True)
    items = _items(c, distinct)
    pool = inverse[: pool.size].reshape(pool.shape)  # from here on: rows of `items`
    hist = inverse[pool.size :].reshape(hist.shape)

    # Retriever: noisy low-rank affinity + over-trusted popularity + per-request noise.
    noise = _normals(rkey, c.pool_size + c.pool_size % 2, s["retr_noise"])[:, : c.pool_size]
    retr_logit = (
        np.einsum("br,bpr->bp", u_retr, items.retr_vec[pool]) * np.sqrt(c.latent_dim / c.retriever_rank)
        + c.retriever_popularity_weight * items.popularity[pool]
        + c.retriever_noise * noise
    )
    order, valid = _top(retr_logit, pool_first, L)  # [B, L]; invalid (too few distinct) last
    cand = np.take_along_axis(pool, order, axis=1)
    score = _sigmoid(c.retriever_scale * np.take_along_axis(retr_logit, order, axis=1) + c.retriever_offset)

    # Truth, in the logged order (position and neighbours are those of the shown list).
    position = np.arange(L, dtype=np.float64)
    unit = items.vec[cand] * items.inv_norm[cand][..., None]
    logit = (
        c.base_logit
        + u_bias[:, None]
        + c.affinity_weight * np.einsum("bd,bld->bl", u_vec, items.vec[cand])
        + c.popularity_weight * items.popularity[cand]
        + c.quality_weight * items.quality[cand]
        - c.position_weight * np.log1p(position)[None, :]
        - c.redundancy_weight * _neighbour_similarity(unit, valid)
    )
    prob = _sigmoid(logit)
    labels = _uniforms(rkey, L, s["label"]) < prob
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


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _item_sample(c: WorldConfig, keys: np.ndarray, n: int, salt: int) -> np.ndarray:
    """[B, n] item indices drawn by popularity (with repeats)."""
    return _power_law_index(_uniforms(keys, n, salt), c.num_items, c.item_popularity_skew)


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


def _history(c: WorldConfig, u_vec, items: _Items, hist, hist_first, hkey) -> tuple[np.ndarray, np.ndarray]:
    """The user's recent items, oldest first: ([B, H] rows of ``items``, [B, H] keep mask).

    The best-liked of the sample (true affinity + Gumbel noise), a random length per (user, day),
    then a random time order.
    """
    s, H = c.salts, c.history_max_len
    pick_u = _uniforms(hkey, c.history_pool + 1, s["history_pick"])
    liking = np.einsum("bd,bhd->bh", u_vec, items.vec[hist]) - 0.5 * np.log(-np.log(pick_u[:, 1:]))
    order, valid = _top(liking, hist_first, H)
    length_u = pick_u[:, 0]
    has_history = length_u >= c.empty_history_frac
    frac = (length_u - c.empty_history_frac) / max(1.0 - c.empty_history_frac, 1e-12)
    length = np.where(has_history, 1 + np.minimum((frac * H).astype(np.int64), H - 1), 0)
    keep = valid & (np.arange(H)[None, :] < length[:, None])
    time_order = np.argsort(np.where(keep, _uniforms(hkey, H, s["history_time"]), np.inf), axis=1)
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


# --------------------------------------------------------------------------------------------
# The Ray Data driver: days of requests into the lake's request_logs Delta table
# --------------------------------------------------------------------------------------------

#: the first day written when the table is empty and no start day is given
DEFAULT_START = dt.date(2024, 1, 1)


class DaysExistError(ValueError):
    """The table already holds a day the run would append (appending would double it)."""


@dataclass(frozen=True)
class GenerationSummary:
    """What one :func:`write_request_logs` run left in the table."""

    table_uri: str
    rows_per_day: dict[str, int]
    """Rows of each written day in the table after the commit (from the Delta log)."""
    version: int
    """Delta table version after the commit."""
    overwritten_days: tuple[str, ...]
    """Days that existed before and were replaced (only with ``overwrite_days=True``)."""


def existing_days(lake: Lake) -> list[str]:
    """Sorted ``ds`` partitions of ``request_logs``; empty when the table does not exist."""
    from deltalake import DeltaTable

    uri, opts = lake.table_uri("request_logs"), lake.storage_options()
    if not DeltaTable.is_deltatable(uri, storage_options=opts):
        return []
    return sorted({p[PARTITION_COLUMN] for p in DeltaTable(uri, storage_options=opts).partitions()})


def next_start_day(lake: Lake) -> dt.date:
    """The day after the table's last day (so repeated runs add one day after another)."""
    days = existing_days(lake)
    return dt.date.fromisoformat(days[-1]) + dt.timedelta(days=1) if days else DEFAULT_START


def write_request_logs(
    lake: Lake,
    config: WorldConfig,
    *,
    start: dt.date | None = None,
    days: int = 1,
    requests_per_day: int = 10_000,
    overwrite_days: bool = False,
    requests_per_block: int = 16_384,
    batch_size: int = 1_024,
) -> GenerationSummary:
    """Generate ``days`` days of ``requests_per_day`` requests from ``start`` (default: the day
    after the table's last day) and write them to ``lake``'s ``request_logs``, partitioned by ds.

    Runs on the current Ray (the caller initialises it). New days are appended by distributed
    Parquet writers with one Delta commit (the first write creates the table). A day already in
    the table raises :class:`DaysExistError` unless ``overwrite_days``, which replaces those
    partitions with one predicate-overwrite commit; that path streams the rows through the
    driver (bounded memory, single writer), fine for re-running a day, not for backfilling a
    billion rows. Check and commit are not one transaction: two generators must not write the
    same table at once. ``requests_per_block`` is the Ray block (≈ Parquet file) size,
    ``batch_size`` the requests per :func:`make_requests` call (30-100 KB of memory each).
    """
    import ray

    if days < 1 or requests_per_day < 1:
        raise ValueError(f"days={days} and requests_per_day={requests_per_day} must both be >= 1")
    start = start or next_start_day(lake)
    day_names = [(start + dt.timedelta(days=i)).isoformat() for i in range(days)]
    clash = sorted(set(day_names) & set(existing_days(lake)))
    if clash and not overwrite_days:
        raise DaysExistError(
            f"{lake.table_uri('request_logs')} already has day(s) {', '.join(clash)}; appending "
            "them again would double their rows. Re-run with --overwrite-days "
            "(overwrite_days=True) to replace them, or choose other days."
        )

    total = days * requests_per_day
    dataset = ray.data.range(total, override_num_blocks=-(-total // requests_per_block)).map_batches(
        _generate_batch,
        batch_size=batch_size,
        batch_format="numpy",
        fn_kwargs={"config": config, "start": start, "requests_per_day": requests_per_day},
    )
    uri, opts = lake.table_uri("request_logs"), lake.storage_options()
    if clash:
        _overwrite_days(dataset, uri, opts, day_names)
    else:
        dataset.write_delta(uri, partition_by=[PARTITION_COLUMN], mode="append", storage_options=opts,
                            schema_mode="error")  # fmt: skip
    return _summarise(uri, opts, day_names, tuple(clash))


def _generate_batch(batch: dict[str, np.ndarray], *, config: WorldConfig, start: dt.date,
                    requests_per_day: int) -> pa.Table:  # fmt: skip
    """Ray ``map_batches`` function: global row numbers -> (day, request index) -> rows."""
    row = batch["id"].astype(np.int64)
    day_offset, index = np.divmod(row, requests_per_day)
    tables = [
        make_requests(config, start + dt.timedelta(days=int(d)), index[day_offset == d])
        for d in np.unique(day_offset)  # one or two days per batch, not a per-row loop
    ]
    return pa.concat_tables(tables) if tables else RL.empty_table()


def _overwrite_days(dataset, uri: str, opts: dict[str, str], day_names: list[str]) -> None:
    """Replace the partitions of ``day_names`` with ``dataset`` in one Delta commit."""
    from deltalake import write_deltalake

    blocks = dataset.iter_batches(batch_format="pyarrow", batch_size=None)  # streamed, not collected
    batches = (batch for block in blocks for batch in block.cast(RL.arrow).to_batches())
    days_sql = ", ".join(f"'{d}'" for d in day_names)  # ISO dates from date.isoformat(): no quoting issues
    write_deltalake(
        uri,
        pa.RecordBatchReader.from_batches(RL.arrow, batches),
        mode="overwrite",
        predicate=f"{PARTITION_COLUMN} IN ({days_sql})",
        partition_by=[PARTITION_COLUMN],
        storage_options=opts,
    )


def _summarise(
    uri: str, opts: dict[str, str], day_names: list[str], overwritten: tuple[str, ...]
) -> GenerationSummary:
    """Rows per written day, counted from the file statistics of the Delta log (no data read)."""
    from deltalake import DeltaTable

    table = DeltaTable(uri, storage_options=opts)
    files = pa.table(table.get_add_actions(flatten=True))
    ds = files[f"partition.{PARTITION_COLUMN}"].to_numpy(zero_copy_only=False)
    rows = files["num_records"].to_numpy()
    return GenerationSummary(
        table_uri=uri,
        rows_per_day={d: int(rows[ds == d].sum()) for d in day_names},
        version=table.version(),
        overwritten_days=overwritten,
    )
