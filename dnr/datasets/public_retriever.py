"""The retriever that fills the requests :mod:`dnr.datasets.public` replays, and its score calibration.

* **Timeline**: the interactions sorted by (user, time), the one index every causal look-up goes
  through (a user's history before a request, their ratings in the label window after it).
* **Retriever**: BPR matrix factorisation whose user factor is folded in from the history
  (asymmetric MF): ``s(h, i) = b_i + <|h|^-1/2 Σ_{j∈h} y_j, q_i>``. Users are not parameters
  because most users active late in MovieLens are new: a per-user factor would be untrained for
  them, while a history-built one exists for everyone and moves as their history grows.
  Candidates are the top ``candidates`` unseen items known to the retriever (``torch.topk`` over
  the score matrix with seen items masked); :func:`retrieve` labels them by the rule in
  :mod:`dnr.datasets.public`.
* **Scores**: Platt scaling, ``sigmoid(a·s + b)``, fitted on the calibration period's candidates
  against their labels. DNR reads the score as a noisy click probability; a BPR dot product has
  no absolute scale, so a plain sigmoid of it would pile up near 0 or 1, and a per-request
  min-max would throw away how good the best candidate is. Platt keeps the retriever order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import nn

from dnr.datasets.interactions import Interactions

from dnr.datasets.public_config import PublicDataConfig


# ---------------------------------------------------------------- the timeline


def _ranges(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten the half-open ranges [starts[r], ends[r]): (row r of each element, position)."""
    lengths = np.maximum(ends - starts, 0)
    rows = np.repeat(np.arange(len(starts)), lengths)
    offsets = np.cumsum(lengths) - lengths
    return rows, np.arange(lengths.sum()) - np.repeat(offsets - starts, lengths)


@dataclass(frozen=True)
class Timeline:
    """Interactions sorted by (user, time): the one index every causal look-up goes through."""

    user: np.ndarray  # [N] dense user index, ascending
    item: np.ndarray  # [N] dense item index
    time: np.ndarray  # [N] int64 seconds, ascending within a user
    positive: np.ndarray  # [N] bool: meets the label rule
    user_start: np.ndarray  # [N] position of the user's first interaction
    user_ids: np.ndarray  # dense user index -> file id
    item_ids: np.ndarray  # dense item index -> file id

    @classmethod
    def build(cls, data: Interactions, min_rating: float) -> "Timeline":
        user_ids, user = np.unique(data.user, return_inverse=True)
        item_ids, item = np.unique(data.item, return_inverse=True)
        order = np.lexsort((data.time, user))
        user = user[order]
        first = np.r_[True, user[1:] != user[:-1]]
        positive = np.ones(len(data), bool) if data.rating is None else data.rating[order] >= min_rating
        user_start = np.maximum.accumulate(np.where(first, np.arange(len(user)), 0))
        return cls(user, item[order], data.time[order], positive, user_start, user_ids, item_ids)

    def search(self, user: np.ndarray, time: np.ndarray) -> np.ndarray:
        """Position of the first interaction of ``user`` at or after ``time`` (vectorised)."""
        times = np.unique(self.time)
        span = len(times) + 1
        keys = self.user * span + np.searchsorted(times, self.time)
        return np.searchsorted(keys, user * span + np.searchsorted(times, time))

    def histories(self, pos: np.ndarray, length: int, pad: int, item_map: np.ndarray | None = None) -> np.ndarray:
        """[B, length] the items before each position (same user), oldest first, left-padded."""
        start = np.maximum(self.user_start[pos], pos - length)
        rows, at = _ranges(start, pos)
        out = np.full((len(pos), length), pad, dtype=np.int64)
        items = self.item[at] if item_map is None else item_map[self.item[at]]
        out[rows, at - pos[rows] + length] = np.where(items < 0, pad, items)
        return out


# ---------------------------------------------------------------- the retriever


class HistoryMF(nn.Module):
    """BPR matrix factorisation with the user factor folded in from recent items.

    ``score(h, i) = b_i + <u(h), q_i>`` with ``u(h) = |h|^-1/2 Σ_{j∈h} y_j``; item index
    ``num_items`` is history padding. Sparse embeddings: a step updates only the rows it touched,
    so its cost does not grow with the catalogue.
    """

    def __init__(self, num_items: int, dim: int, generator: torch.Generator):
        super().__init__()
        self.pad = num_items
        item = torch.randn(num_items, dim, generator=generator) * 0.1
        context = torch.randn(num_items + 1, dim, generator=generator) * 0.1
        context[num_items] = 0
        self.item = nn.Embedding.from_pretrained(item, freeze=False, sparse=True)
        self.bias = nn.Embedding.from_pretrained(torch.zeros(num_items, 1), freeze=False, sparse=True)
        self.context = nn.EmbeddingBag.from_pretrained(
            context, freeze=False, mode="sum", sparse=True, padding_idx=num_items
        )

    def user(self, history: torch.Tensor) -> torch.Tensor:
        """history [B, H] item indices (pad = num_items) -> user factors [B, dim]."""
        count = (history != self.pad).sum(1, keepdim=True).clamp(min=1)
        return self.context(history) / count.sqrt()

    def score(self, user: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """user [B, dim]; items [B, k] -> [B, k], or every item -> [B, num_items]."""
        if items is None:
            return user @ self.item.weight.T + self.bias.weight.T
        return torch.einsum("bd,bkd->bk", user, self.item(items)) + self.bias(items).squeeze(-1)


def train_retriever(tl: Timeline, fit: np.ndarray, item_map: np.ndarray, cfg: PublicDataConfig) -> HistoryMF:
    """BPR on the retriever period's positives (``fit``: [N] bool over the timeline), one uniform
    negative per positive. ``item_map``: dense item -> retriever item (-1 when unknown)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    num_items = int(item_map.max()) + 1
    model = HistoryMF(num_items, cfg.dim, gen)
    opt = torch.optim.SparseAdam(list(model.parameters()), lr=cfg.lr)
    targets = np.flatnonzero(fit & tl.positive)
    for _ in range(cfg.epochs):
        for batch in torch.randperm(len(targets), generator=gen).split(cfg.batch_size):
            pos = targets[batch.numpy()]
            history = torch.from_numpy(tl.histories(pos, cfg.history_len, num_items, item_map))
            negative = torch.randint(num_items, (len(pos),), generator=gen)
            items = torch.stack([torch.from_numpy(item_map[tl.item[pos]]), negative], 1)
            user = model.user(history)
            score = model.score(user, items)
            reg = user.square().sum() + model.item(items).square().sum()
            loss = -nn.functional.logsigmoid(score[:, 0] - score[:, 1]).mean() + cfg.l2 * reg / len(pos)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


# ---------------------------------------------------------------- candidates of requests


@dataclass
class Retrieved:
    """Requests with their candidates; [R, K] arrays are valid where ``k < length``."""

    pos: np.ndarray  # [R] timeline position of the session's first interaction (the request)
    items: np.ndarray  # [R, K] dense item index, retriever order
    raw: np.ndarray  # [R, K] float64 retriever score
    labels: np.ndarray  # [R, K] int8
    length: np.ndarray  # [R] valid candidates
    future_positives: np.ndarray  # [R] distinct unseen items the user likes in the label window

    def valid(self) -> np.ndarray:
        return np.arange(self.items.shape[1]) < self.length[:, None]

    def take(self, rows: np.ndarray) -> "Retrieved":
        return Retrieved(*(getattr(self, f.name)[rows] for f in fields(self)))


@torch.no_grad()
def retrieve(tl: Timeline, model: HistoryMF, item_map: np.ndarray, known: np.ndarray, pos: np.ndarray,
             cfg: PublicDataConfig) -> Retrieved:
    """Top-``candidates`` unseen known items for the requests at ``pos``, with labels."""
    n_items, n_known = len(tl.item_ids), len(known)
    k = min(cfg.candidates, n_known)
    out = Retrieved(pos, np.zeros((len(pos), k), np.int64), np.zeros((len(pos), k)), np.zeros((len(pos), k), np.int8),
                    np.zeros(len(pos), np.int64), np.zeros(len(pos), np.int64))
    window_end = tl.search(tl.user[pos], tl.time[pos] + cfg.label_window_s)
    chunk = max(1, (1 << 24) // n_known)  # bounds the [chunk, items] score matrix to ~128 MiB
    for lo in range(0, len(pos), chunk):
        p, rs = pos[lo : lo + chunk], slice(lo, lo + chunk)
        history = torch.from_numpy(tl.histories(p, cfg.history_len, n_known, item_map))
        scores = model.score(model.user(history)).double()
        rows, at = _ranges(tl.user_start[p], p)  # seen: everything strictly before the request
        seen_keys = rows * n_items + tl.item[at]
        retr = item_map[tl.item[at]]
        scores[torch.from_numpy(rows[retr >= 0]), torch.from_numpy(retr[retr >= 0])] = -math.inf
        top = torch.topk(scores, k, dim=1)
        rows, at = _ranges(p, window_end[lo : lo + chunk])
        liked = np.setdiff1d(rows[tl.positive[at]] * n_items + tl.item[at][tl.positive[at]], seen_keys)
        items = known[top.indices.numpy()]
        out.items[rs], out.raw[rs] = items, top.values.numpy()
        out.length[rs] = np.isfinite(out.raw[rs]).sum(1)
        out.labels[rs] = np.isin(np.arange(len(p))[:, None] * n_items + items, liked)
        out.future_positives[rs] = np.bincount(liked // n_items, minlength=len(p))
    return out


# ---------------------------------------------------------------- score calibration


def fit_platt(raw: np.ndarray, labels: np.ndarray, iters: int = 100) -> tuple[float, float] | None:
    """Logistic regression of labels on the raw score (Newton's method); None when the
    calibration set lacks a class or the fitted slope is not positive (it would invert the order)."""
    if len(np.unique(labels)) < 2:
        return None
    mean, std = raw.mean(), raw.std() + 1e-12
    x = np.stack([(raw - mean) / std, np.ones_like(raw)], 1)
    w = np.zeros(2)
    for _ in range(iters):
        p = 1 / (1 + np.exp(-x @ w))
        step = np.linalg.solve(x.T @ (x * (p * (1 - p))[:, None]) + 1e-6 * np.eye(2), x.T @ (p - labels))
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    a = w[0] / std
    return (float(a), float(w[1] - a * mean)) if a > 0 else None


def squash(raw: np.ndarray, platt: tuple[float, float] | None) -> np.ndarray:
    """Raw retriever scores to float32 scores in [0, 1]: Platt's ``sigmoid(a·raw + b)``, or a
    plain sigmoid when ``platt`` is None."""
    a, b = platt or (1.0, 0.0)
    return (1 / (1 + np.exp(-(a * raw + b)))).astype(np.float32)
