"""Ranking metrics over padded rerank batches, kept as sums and counts so they add up exactly.

Shapes: B = requests in the batch, L = padded candidate-list length, nK = number of cut-offs K.

Conventions (read these before comparing a number with another system):

* Inputs are ``scores`` [B, L] (model logits or any higher-is-better ranking score), ``labels``
  [B, L] in {0, 1} and ``valid`` [B, L] bool, True for candidates that are real AND labelled,
  i.e. ``batch.mask & batch.label_mask`` of a :class:`~dnr.data.batch.RerankBatch`.
* Only valid candidates are ranked. Invalid ones (padding, unlabelled) are placed after every
  valid candidate and never count: not in the top K, not in a denominator, not in an AUC pair.
  Their scores and labels may hold anything, NaN included.
* Ranking is deterministic: a stable sort by descending score, so tied scores keep their
  original (retriever) order. AUC does not rank: a tied positive/negative pair counts 1/2.
* Every request falls in exactly one class: ``requests_no_valid`` (no valid candidate),
  ``requests_no_positive`` (valid candidates, none positive) or ``requests_ranked`` (at least one
  valid positive). The metrics at K average over ranked requests only; ``AUC`` averages over
  ``requests_auc``, the ranked requests that also hold a valid negative.
* Per ranked request, with h = positives in the top K, P = valid positives, V = valid candidates:

  - ``H@K`` (hit): 1 if h > 0, else 0.
  - ``N@K`` (NDCG): DCG@K / IDCG@K with binary gain and discount 1 / log2(rank + 1), ranks
    from 1; IDCG@K is the DCG of the request's own min(P, K) positives ranked first.
  - ``M@K`` (MAP): the sum of precision@r over the ranks r <= K that hold a positive,
    divided by min(P, K).
  - ``F1@K``: from precision h / min(K, V) and recall h / P; 0 when h = 0. The precision
    denominator is min(K, V), not K, so a request with fewer than K valid candidates can still
    reach precision 1 (the model cannot be blamed for slots the request does not have).
  - ``AUC``: the fraction of (positive, negative) pairs where the positive scores higher, ties 1/2.

* ``AUC_pooled`` pools every valid candidate of every request (no-positive requests included)
  into one AUC. An exact pooled AUC needs every score at once, so it would not add across
  batches or workers. Instead each side keeps histograms of sigmoid(score) over ``pooled_bins``
  equal bins on [0, 1], whose counts add. Pairs in different bins are ordered exactly (sigmoid is
  monotone); pairs sharing a bin are counted 1/2. Each such pair is off by at most 1/2, so

      |AUC_pooled - exact pooled AUC| <= AUC_pooled_err = 1/2 * sum_b pos_b * neg_b / (P * N),

  with pos_b, neg_b the counts in bin b and P, N the totals. The bound is data dependent and is
  reported with the value: it is O(1 / pooled_bins) for scores spread over the bins, but bins are
  uniform in probability, so logits beyond about +-ln(pooled_bins) share the end bins and a very
  confident model gets a loose bound. :func:`exact_auc` is the exact reference for one array.
* Aggregation: :class:`MetricAccumulator` keeps sums and counts only; ``merge`` and
  ``all_reduce`` add them, and ``compute`` divides once at the end, never averaging averages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist

DEFAULT_K = 6
DEFAULT_POOLED_BINS = 4096

_AT_K = ("H", "N", "M", "F1")
_COUNTS = (
    "requests",
    "requests_ranked",
    "requests_no_positive",
    "requests_no_valid",
    "requests_auc",
)


def _as_ks(ks: int | Sequence[int]) -> tuple[int, ...]:
    ks = (ks,) if isinstance(ks, int) else tuple(int(k) for k in ks)
    if not ks or min(ks) < 1 or len(set(ks)) != len(ks):
        raise ValueError(f"ks must be distinct integers >= 1, got {ks}")
    return ks


def _check_inputs(scores: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> None:
    if scores.dim() != 2 or labels.shape != scores.shape or valid.shape != scores.shape:
        raise ValueError(
            f"scores, labels, valid must share one [B, L] shape, got "
            f"{tuple(scores.shape)}, {tuple(labels.shape)}, {tuple(valid.shape)}"
        )
    if valid.dtype != torch.bool:
        raise ValueError(f"valid must be a bool mask, got {valid.dtype}")
    if torch.isnan(scores[valid]).any():
        raise ValueError("NaN score on a valid candidate: its rank would be arbitrary")
    valid_labels = labels[valid]
    if ((valid_labels != 0) & (valid_labels != 1)).any():
        raise ValueError("labels of valid candidates must be 0 or 1")


def _ranked_relevance(scores: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """[B, L] float64 0/1: whether rank r (column r - 1) holds a positive.

    Valid candidates come first by descending score, ties in original order; invalid ones last.
    """
    by_score = torch.argsort(scores, dim=1, descending=True, stable=True)
    # A second stable sort on validity alone: a masked -inf fill would tie a valid -inf score
    # with padding, and padding earlier in the row would then take its top-K slot.
    valid_first = torch.argsort(valid.gather(1, by_score), dim=1, descending=True, stable=True)
    return pos.gather(1, by_score.gather(1, valid_first)).to(torch.float64)


def _metrics_at_k(
    rel: torch.Tensor, n_valid: torch.Tensor, n_pos: torch.Tensor, ks: tuple[int, ...]
) -> dict[str, torch.Tensor]:
    """H, N, M, F1 at every K from ranked relevance ``rel`` [B, L]; each [B, nK] float64.

    Values of requests without a valid positive are meaningless (0/0) and masked by the caller.
    """
    num_requests, list_len = rel.shape
    rank = torch.arange(1, list_len + 1, dtype=torch.float64, device=rel.device)
    discount = 1.0 / torch.log2(rank + 1.0)
    hits = rel.cumsum(1)  # positives within the top r
    dcg = (rel * discount).cumsum(1)
    ap = (rel * hits / rank).cumsum(1)  # sum of precision@r over positive ranks <= r
    k = torch.tensor(ks, device=rel.device)
    # Column of rank min(K, L): a K past the list end sees the whole list.
    last = (k.clamp(max=list_len) - 1).expand(num_requests, -1)
    h = hits.gather(1, last)
    # Clamp: keeps rows without a positive indexable (the caller masks them).
    ideal_hits = torch.minimum(n_pos[:, None], k).clamp(min=1)
    idcg = discount.cumsum(0)[ideal_hits - 1]
    precision_slots = torch.minimum(n_valid[:, None], k)
    return {
        "H": (h > 0).to(torch.float64),
        "N": dcg.gather(1, last) / idcg,
        "M": ap.gather(1, last) / ideal_hits,
        # 2PR / (P + R) with P = h / slots, R = h / n_pos simplifies to 2h / (slots + n_pos),
        # which is 0 when h = 0 without a 0/0.
        "F1": 2.0 * h / (precision_slots + n_pos[:, None]),
    }


def _pairwise_auc(scores: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """[B] float64 AUC per row of ``scores`` [B, L] over pairs of ``pos`` x ``neg`` candidates.

    Ties count 1/2. NaN for rows without a pair. O(B L log L): sorted negatives + searchsorted.
    """
    n_neg = neg.sum(1, keepdim=True)
    neg_sorted = scores.masked_fill(~neg, math.inf).sort(dim=1).values
    query = scores.contiguous()
    below = torch.searchsorted(neg_sorted, query)  # the +inf fillers are never strictly below
    # Clamp: a +inf score would also count the fillers as at-or-below.
    at_or_below = torch.searchsorted(neg_sorted, query, right=True).clamp(max=n_neg)
    # below + at_or_below = 2 * wins + ties, so halving counts each tie 1/2.
    wins = ((below + at_or_below) * pos).sum(1).to(torch.float64) / 2.0
    pairs = (pos.sum(1) * n_neg.squeeze(1)).to(torch.float64)
    return torch.where(pairs > 0, wins / pairs.clamp(min=1), math.nan)


def per_request_metrics(
    scores: torch.Tensor,
    labels: torch.Tensor,
    valid: torch.Tensor,
    ks: int | Sequence[int] = DEFAULT_K,
) -> dict[str, torch.Tensor]:
    """Metrics of every request of one padded batch, for paired comparisons such as a bootstrap.

    Args:
        scores: [B, L] ranking scores, higher first.
        labels: [B, L] 0/1 labels (only valid candidates are read).
        valid: [B, L] bool, real and labelled candidates.
        ks: one cut-off K or several.

    Returns:
        ``H@K``, ``N@K``, ``M@K``, ``F1@K`` for each K and ``AUC``: [B] float64, NaN for the
        excluded requests (no valid positive; for AUC also no valid negative). ``num_valid``,
        ``num_positive``: [B] int64. Exclusion depends on labels and mask only, so two models
        scored on one batch have NaN on the same requests and their paired deltas line up.
    """
    ks = _as_ks(ks)
    _check_inputs(scores, labels, valid)
    if scores.shape[1] == 0:  # an all-empty batch: one invalid column keeps the indexing defined
        scores, labels, valid = (t.new_zeros(t.shape[0], 1) for t in (scores, labels, valid))
    scores = scores.to(torch.float64).masked_fill(~valid, 0.0)  # invalid NaN must not reach sorts
    pos = valid & (labels == 1)
    n_valid, n_pos = valid.sum(1), pos.sum(1)
    ranked = n_pos > 0
    at_k = _metrics_at_k(_ranked_relevance(scores, pos, valid), n_valid, n_pos, ks)
    out = {
        f"{name}@{k}": torch.where(ranked, values[:, i], math.nan)
        for name, values in at_k.items()
        for i, k in enumerate(ks)
    }
    out["AUC"] = _pairwise_auc(scores, pos, valid & ~pos)
    out["num_valid"], out["num_positive"] = n_valid, n_pos
    return out


def exact_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Exact AUC of one in-memory array (ties 1/2); the reference for ``AUC_pooled`` in tests.

    Args:
        scores: [N] scores. labels: [N] 0/1. NaN when either class is empty.
    """
    if scores.dim() != 1 or labels.shape != scores.shape:
        raise ValueError(
            f"scores and labels must share one [N] shape, got "
            f"{tuple(scores.shape)}, {tuple(labels.shape)}"
        )
    pos = (labels == 1)[None]
    return float(_pairwise_auc(scores.to(torch.float64)[None], pos, ~pos)[0])


def _histogram_auc(pos_hist: torch.Tensor, neg_hist: torch.Tensor) -> tuple[float, float]:
    """(AUC, error bound) from per-bin counts [bins] of positive and negative scores."""
    pairs = float(pos_hist.sum() * neg_hist.sum())
    if pairs == 0:
        return math.nan, math.nan
    neg_lower_bins = neg_hist.cumsum(0) - neg_hist
    same_bin = float((pos_hist * neg_hist).sum())
    wins = float((pos_hist * neg_lower_bins).sum()) + 0.5 * same_bin
    return wins / pairs, 0.5 * same_bin / pairs


def _ratio(total: torch.Tensor, count: torch.Tensor) -> float:
    return float(total / count) if count > 0 else math.nan


class MetricAccumulator:
    """Running sums and counts of the ranking metrics over batches and workers.

    ``update`` per batch, ``merge`` or ``all_reduce`` to combine, ``compute`` once at the end.
    The state is float64 (counts stay exact up to 2**53) on ``device``; on GPUs pass
    ``device="cuda"`` so per-batch sums stay on the GPU and NCCL can all-reduce the state.
    """

    def __init__(
        self,
        ks: int | Sequence[int] = DEFAULT_K,
        pooled_bins: int = DEFAULT_POOLED_BINS,
        device: torch.device | str = "cpu",
    ):
        if pooled_bins < 2:
            raise ValueError(f"pooled_bins must be >= 2, got {pooled_bins}")
        self.ks = _as_ks(ks)
        self.pooled_bins = pooled_bins
        self.device = torch.device(device)

        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(shape, dtype=torch.float64, device=self.device)

        # Insertion order is the packing order of all_reduce: identical on every rank.
        self._state: dict[str, torch.Tensor] = {
            **{f"sum/{name}": zeros(len(self.ks)) for name in _AT_K},
            "sum/AUC": zeros(),
            **{f"count/{name}": zeros() for name in _COUNTS},
            "hist/pooled_pos": zeros(pooled_bins),
            "hist/pooled_neg": zeros(pooled_bins),
        }

    @torch.no_grad()
    def update(self, scores: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> None:
        """Add one padded batch: scores, labels [B, L]; valid [B, L] bool (real and labelled)."""
        per = per_request_metrics(scores, labels, valid, self.ks)
        n_valid, n_pos = per["num_valid"], per["num_positive"]
        pos = valid & (labels == 1)
        neg = valid & ~pos
        batch = {
            **{
                f"sum/{name}": torch.stack([per[f"{name}@{k}"].nansum() for k in self.ks])
                for name in _AT_K
            },
            "sum/AUC": per["AUC"].nansum(),
            "count/requests": torch.tensor(n_valid.numel()),
            "count/requests_ranked": (n_pos > 0).sum(),
            "count/requests_no_positive": ((n_valid > 0) & (n_pos == 0)).sum(),
            "count/requests_no_valid": (n_valid == 0).sum(),
            "count/requests_auc": ((n_pos > 0) & (n_pos < n_valid)).sum(),
        }
        # float64 sigmoid saturates only past |logit| ~ 37; 1.0 belongs to the top bin.
        prob = torch.sigmoid(scores.to(torch.float64).masked_fill(~valid, 0.0))
        bins = (prob * self.pooled_bins).long().clamp(max=self.pooled_bins - 1).flatten()
        for name, side in (("hist/pooled_pos", pos), ("hist/pooled_neg", neg)):
            # scatter_add_ into a fixed-size histogram: no boolean indexing, no host round trip.
            hist = torch.zeros(self.pooled_bins, dtype=torch.float64, device=bins.device)
            batch[name] = hist.scatter_add_(0, bins, side.flatten().to(torch.float64))
        for name, value in batch.items():
            self._state[name] += value.to(self.device, torch.float64)

    def merge(self, other: MetricAccumulator) -> MetricAccumulator:
        """Add ``other``'s sums and counts into this accumulator (in place); returns ``self``."""
        if other.ks != self.ks or other.pooled_bins != self.pooled_bins:
            raise ValueError(
                f"cannot merge ks={other.ks}, pooled_bins={other.pooled_bins} into "
                f"ks={self.ks}, pooled_bins={self.pooled_bins}"
            )
        for name, value in other._state.items():
            self._state[name] += value.to(self.device)
        return self

    def all_reduce(self, group: dist.ProcessGroup | None = None) -> None:
        """Sum the state over the ranks of ``group`` in place; every rank then holds the totals.

        One collective on one flat float64 tensor. The accumulator's device must suit the
        backend: CUDA for NCCL, CPU for gloo.
        """
        flat = torch.cat([value.reshape(-1) for value in self._state.values()])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        chunks = flat.split([value.numel() for value in self._state.values()])
        self._state = {
            name: chunk.reshape(value.shape)
            for (name, value), chunk in zip(self._state.items(), chunks)
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The raw state, copied: ``ks`` [nK] int64 plus float64 sums, counts and histograms.

        Every entry but ``ks`` is additive: the state of a union of batches is the entry-wise
        sum of the states of its parts.
        """
        state = {name: value.clone() for name, value in self._state.items()}
        state["ks"] = torch.tensor(self.ks, dtype=torch.int64)
        return state

    @classmethod
    def from_state_dict(
        cls, state: Mapping[str, torch.Tensor], device: torch.device | str = "cpu"
    ) -> MetricAccumulator:
        """Rebuild an accumulator from :meth:`state_dict` (e.g. sent from another worker)."""
        acc = cls(
            ks=state["ks"].tolist(),
            pooled_bins=state["hist/pooled_pos"].numel(),
            device=device,
        )
        if set(state) != set(acc._state) | {"ks"}:
            raise ValueError(f"state keys {sorted(state)} do not match {sorted(acc._state)} + ks")
        for name, value in acc._state.items():
            if state[name].shape != value.shape:
                raise ValueError(
                    f"state {name} has shape {tuple(state[name].shape)}, "
                    f"expected {tuple(value.shape)}"
                )
            value.copy_(state[name])
        return acc

    def compute(self) -> dict[str, float]:
        """Metrics from the sums and counts; NaN where a metric has no request to average.

        Keys: ``H@K``, ``N@K``, ``M@K``, ``F1@K`` per K, ``AUC``, ``AUC_pooled``,
        ``AUC_pooled_err`` (its error bound), and the counts ``requests``, ``requests_ranked``,
        ``requests_no_positive``, ``requests_no_valid``, ``requests_auc``.
        """
        state = {name: value.cpu() for name, value in self._state.items()}
        ranked = state["count/requests_ranked"]
        out = {
            f"{name}@{k}": _ratio(state[f"sum/{name}"][i], ranked)
            for name in _AT_K
            for i, k in enumerate(self.ks)
        }
        out["AUC"] = _ratio(state["sum/AUC"], state["count/requests_auc"])
        out["AUC_pooled"], out["AUC_pooled_err"] = _histogram_auc(
            state["hist/pooled_pos"], state["hist/pooled_neg"]
        )
        out.update({name: float(state[f"count/{name}"]) for name in _COUNTS})
        return out


def metric_ks(names: tuple[str, ...]) -> tuple[int, ...]:
    """Cut-offs K the accumulators need: the default one and every K a gate metric names."""
    return tuple(sorted({DEFAULT_K} | {int(n.split("@")[1]) for n in names if "@" in n}))
