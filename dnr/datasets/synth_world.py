"""The synthetic world's parameters and its users and items, computed on demand from an index.

All randomness is stateless hashing of ids (splitmix64, one salt per random stream, see
:attr:`WorldConfig.salts`), so any user or item can be generated alone, on any worker, in any
order, and ``num_users=10**9`` costs nothing:

* **Users and items** have latent vectors ``u, v ∈ R^d`` derived from their index by seeded
  hashing (Box-Muller), never stored. Items belong to topics (a shared topic direction plus an
  individual part), have a popularity rank (a small index is a popular item) and an intrinsic
  quality. Item ids are the index hashed to an arbitrary-looking positive int64.
* **The retriever's view** of both is the first ``retriever_rank`` coordinates of the true
  vectors plus a fixed per-user and per-item error.

:mod:`dnr.datasets.synth` draws the requests, candidate lists, labels and histories of this world.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cached_property

import numpy as np

from dnr.data.hashing import splitmix64

_TWO_PI = 2.0 * np.pi

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


def uniforms(keys: np.ndarray, n: int, salt: int) -> np.ndarray:
    """``[..., n]`` float64 uniforms in (0, 1)."""
    return ((_mix(keys, n, salt) >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / (1 << 53))


def normals(keys: np.ndarray, d: int, salt: int) -> np.ndarray:
    """``[..., d]`` float64 standard normals per key (Box-Muller, two per 64-bit hash)."""
    h = _mix(keys, d // 2, salt)
    u1 = ((h >> np.uint64(32)).astype(np.float64) + 0.5) * (1.0 / (1 << 32))
    u2 = (h & np.uint64(0xFFFFFFFF)).astype(np.float64) * (1.0 / (1 << 32))
    r = np.sqrt(-2.0 * np.log(u1))
    return np.concatenate([r * np.cos(_TWO_PI * u2), r * np.sin(_TWO_PI * u2)], axis=-1)


def power_law_index(u: np.ndarray, n: int, skew: float) -> np.ndarray:
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
class ItemFeatures:
    """Features of a set of item indices (the distinct items of one batch), float32 to halve
    the [B, P, d] gathers that dominate the cost. Shapes: [N, ...]."""

    vec: np.ndarray  # [N, d] true latent vector; <u, v> has unit variance
    inv_norm: np.ndarray  # [N] 1 / |vec| (for the cosine similarity of list neighbours)
    popularity: np.ndarray  # [N] standardised log-popularity (mean 0, std 1 under the pool law)
    quality: np.ndarray  # [N] intrinsic appeal, N(0, 1)
    retr_vec: np.ndarray  # [N, r] the retriever's noisy low-rank view of vec


def item_features(c: WorldConfig, index: np.ndarray) -> ItemFeatures:
    """Features of item indices ``index`` [N] (hashed ``_ITEM_CHUNK`` items at a time)."""
    s, d, r, n = c.salts, c.latent_dim, c.retriever_rank, len(index)
    scale = d**-0.25  # so <u, v> has unit variance
    topic_vecs = np.sqrt(c.topic_share) * normals(np.arange(c.num_topics), d, s["topic_vec"])
    out = ItemFeatures(*(np.empty(shape, np.float32) for shape in ((n, d), n, n, n, (n, r))))
    for lo in range(0, n, _ITEM_CHUNK):
        idx = index[lo : lo + _ITEM_CHUNK]
        rows = slice(lo, lo + len(idx))
        topic = (splitmix64(idx, s["item_topic"]) % np.uint64(c.num_topics)).astype(np.int64)
        vec = scale * (topic_vecs[topic] + np.sqrt(1 - c.topic_share) * normals(idx, d, s["item_vec"]))
        out.vec[rows] = vec
        out.inv_norm[rows] = 1.0 / np.linalg.norm(vec, axis=-1)
        noise = normals(idx, r + r % 2, s["retr_item"])[:, :r]
        out.retr_vec[rows] = vec[:, :r] + scale * c.retriever_embedding_noise * noise
        # -log of the index's quantile is Exp(mean=skew) under the pool law: standardise it.
        popularity = -np.log((idx + 0.5) / c.num_items) / c.item_popularity_skew - 1.0
        out.popularity[rows] = np.minimum(popularity, 4.0)
        out.quality[rows] = normals(idx, 2, s["item_quality"])[:, 0]
    return out


def user_features(c: WorldConfig, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true vector [B, d], click bias [B], retriever's view [B, r]) of user indices."""
    s, d, r = c.salts, c.latent_dim, c.retriever_rank
    scale = d**-0.25
    vec = scale * normals(index, d, s["user_vec"])
    bias = c.user_bias_std * normals(index, 2, s["user_bias"])[:, 0]
    noise = normals(index, r + r % 2, s["retr_user"])[:, :r]
    retr = vec[:, :r] + scale * c.retriever_embedding_noise * noise
    return vec.astype(np.float32), bias, retr.astype(np.float32)
