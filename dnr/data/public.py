"""Public interaction data (MovieLens and the like) turned into ``request_logs``.

A ratings file has no requests, no retrieval and no exposures, so this module replays one: it
invents the requests a platform would have logged and runs a real retriever to fill them.

* **Split, by time** (interaction quantiles): the earliest ``retriever_fraction`` trains the
  retriever; requests of the next ``calibration_fraction`` whose label window closes before the
  written period calibrate its scores; requests of the rest are written. Nothing from the written
  period reaches the retriever or the calibration.
* **Requests**: a user's interactions are cut into sessions (a gap > ``session_gap_hours`` starts a
  new one); each session start is a request at the time of its first interaction. Everything the
  user did strictly before that time is *seen*: their history is the most recent seen items
  (oldest first, at most ``history_len``), and seen items are never candidates.
* **Retriever**: BPR matrix factorisation whose user factor is folded in from the history
  (asymmetric MF): ``s(h, i) = b_i + <|h|^-1/2 Σ_{j∈h} y_j, q_i>``. Users are not parameters
  because most users active late in MovieLens are new: a per-user factor would be untrained for
  them, while a history-built one exists for everyone and moves as their history grows.
  Candidates are the top ``candidates`` unseen items known to the retriever (``torch.topk`` over
  the score matrix with seen items masked).
* **Scores**: Platt scaling, ``sigmoid(a·s + b)``, fitted on the calibration period's candidates
  against their labels. DNR reads the score as a noisy click probability; a BPR dot product has
  no absolute scale, so a plain sigmoid of it would pile up near 0 or 1, and a per-request
  min-max would throw away how good the best candidate is. Platt keeps the retriever order.
* **Labels**: candidate i of a request at time t is 1 iff the user rates i with
  ``rating >= min_rating`` at a time in ``[t, t + label_window_days)``; else 0. Files without a
  rating column count every interaction as positive.
* **ds**: the written requests are spread over ``days`` consecutive UTC days by time quantile
  (equal-count days) and ``event_time`` is rebased piecewise-linearly onto them, so the order of
  requests is kept, ``ds`` is the UTC date of ``event_time`` and a daily job has days to replay.

Item and user ids are the file's own ids. ``exposed`` and ``true_click_prob`` are null.
"""

from __future__ import annotations

import datetime as dt
import io
import math
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import torch
from torch import nn

from dnr.schemas import REQUEST_LOGS
from dnr.storage import Lake

RL = REQUEST_LOGS.col
FORMATS = ("auto", "movielens-dat", "movielens-csv", "csv")
_MOVIELENS_CSV_HEADER = ["userId", "movieId", "rating", "timestamp"]
#: generic CSV header names (lower-cased) for each role
_ALIASES = {
    "user": {"user", "user_id", "userid"},
    "item": {"item", "item_id", "itemid", "movieid", "movie_id"},
    "rating": {"rating"},
    "timestamp": {"timestamp", "time", "ts"},
}
_ROLES = tuple(_ALIASES)
_SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class PublicDataConfig:
    """How a ratings file becomes request logs."""

    fmt: str = "auto"
    """File format, one of FORMATS; ``auto`` detects it from the extension and first line."""
    min_rating: float = 4.0
    """A future rating at or above this is a positive label (ignored for files without ratings)."""
    days: int = 30
    """Consecutive UTC days the written requests are spread over (equal-count days)."""
    start_date: str | None = None
    """First ds (YYYY-MM-DD); default: the UTC date of the first written request's real time."""
    candidates: int = 50
    """Candidates per request (fewer when the user has seen almost every known item)."""
    history_len: int = 50
    """Most recent seen items kept as the history (also the retriever's user input)."""
    retriever_fraction: float = 0.7
    """Earliest share of interactions the retriever is trained on."""
    calibration_fraction: float = 0.1
    """Next share of interactions; its requests whose label window closes before the written
    period calibrate the scores (they are not written)."""
    session_gap_hours: float = 1.0
    """A gap longer than this between a user's interactions starts a new request."""
    label_window_days: float = 7.0
    """Future window after the request time in which ratings make labels."""
    min_history: int = 1
    """Requests need at least this many earlier interactions (0 keeps cold-start requests)."""
    seed: int = 0
    """Seed of the retriever's initialisation and negative sampling."""
    dim: int = 64
    """Retriever factor dimension."""
    epochs: int = 5
    """Retriever training epochs over the retriever period's positive interactions."""
    batch_size: int = 1024
    lr: float = 0.01
    l2: float = 1e-2
    """L2 penalty on the factors a BPR step touches; strong, because on a time split the future
    is closer to popularity than to a user's past (weaker: higher AUC, lower recall)."""

    def __post_init__(self):
        checks = [
            (self.fmt in FORMATS, "fmt", f"one of {FORMATS}"),
            (self.days >= 1, "days", ">= 1"),
            (self.candidates >= 1, "candidates", ">= 1"),
            (self.history_len >= 1, "history_len", ">= 1"),
            (0 < self.retriever_fraction < 1, "retriever_fraction", "in (0, 1)"),
            (0 < self.calibration_fraction < 1 - self.retriever_fraction, "calibration_fraction",
             "in (0, 1 - retriever_fraction)"),
            (self.session_gap_hours >= 0, "session_gap_hours", ">= 0"),
            (self.label_window_days > 0, "label_window_days", "> 0"),
            (self.min_history >= 0, "min_history", ">= 0"),
            (self.dim >= 1 and self.epochs >= 1 and self.batch_size >= 1, "dim/epochs/batch_size", ">= 1"),
        ]
        for ok, name, want in checks:
            if not ok:
                raise ValueError(f"public data config {name}={getattr(self, name, None)!r}: must be {want}")
        if self.start_date is not None:
            dt.date.fromisoformat(self.start_date)

    @property
    def label_window_s(self) -> int:
        return int(self.label_window_days * _SECONDS_PER_DAY)


# ---------------------------------------------------------------- reading


class InteractionFileError(ValueError):
    """A ratings file that cannot be read; the message names the file, line and column."""


@dataclass(frozen=True)
class Interactions:
    """One row per interaction, in file order. ``rating`` is None for implicit-feedback files;
    ``time`` is Unix seconds, or the row number for files without timestamps."""

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray | None
    time: np.ndarray
    fmt: str

    def __len__(self) -> int:
        return len(self.user)


def _first_line(path: Path) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.readline().strip()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def detect_format(path: str | Path) -> str:
    """``movielens-dat`` for ``::`` files, ``movielens-csv`` for MovieLens' CSV header, else ``csv``."""
    path = Path(path)
    first = _first_line(path)
    if path.suffix == ".dat" or "::" in first:
        return "movielens-dat"
    if first.split(",") == _MOVIELENS_CSV_HEADER:
        return "movielens-csv"
    if path.suffix == ".csv" or "," in first:
        return "csv"
    raise InteractionFileError(f"{path}: cannot tell the format from line 1 {first!r}; pass --format")


def _csv_roles(path: Path, first: str) -> tuple[list[str], bool]:
    """Roles of a generic CSV's columns and whether line 1 is a header."""
    names = [f.strip() for f in first.split(",")]
    if all(_is_number(f) for f in names):
        if not 2 <= len(names) <= 4:
            raise InteractionFileError(
                f"{path}, line 1: {len(names)} columns; expected user,item[,rating[,timestamp]]"
            )
        return list(_ROLES[: len(names)]), False
    roles = []
    for name in names:
        role = next((r for r, names in _ALIASES.items() if name.lower() in names), None)
        if role is None or role in roles:
            raise InteractionFileError(
                f"{path}, line 1: column {name!r} is not one of user, item, rating, timestamp (or is repeated)"
            )
        roles.append(role)
    if "user" not in roles or "item" not in roles:
        raise InteractionFileError(f"{path}, line 1: the header needs a user and an item column, got {names}")
    return roles, True


_PARSERS = {"user": int, "item": int, "rating": float, "timestamp": float}


def _locate_bad_line(path: Path, sep: str, roles: list[str], header: bool) -> str:
    """Slow path, only after the fast reader failed: the first line that does not parse."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            if (header and lineno == 1) or not line.strip():
                continue
            values = line.rstrip("\r\n").split(sep)
            if len(values) != len(roles):
                expected = f"{len(roles)} ({sep.join(roles)})"
                return f"line {lineno}: {len(values)} columns, expected {expected}: {line.strip()!r}"
            for role, value in zip(roles, values):
                try:
                    if not math.isfinite(_PARSERS[role](value)):
                        raise ValueError
                except ValueError:
                    return f"line {lineno}, column {role!r}: {value!r} is not a valid {_PARSERS[role].__name__}"
    return "the reader failed on a line the line scan accepts"


def load_interactions(path: str | Path, fmt: str = "auto") -> Interactions:
    """Read a ratings file. Raises InteractionFileError naming the file, line and column."""
    path = Path(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {FORMATS}")
    if not path.is_file():
        raise InteractionFileError(f"{path}: no such file")
    fmt = detect_format(path) if fmt == "auto" else fmt
    first = _first_line(path)
    if fmt == "movielens-dat":
        sep, roles, header = "::", list(_ROLES), False
        # pyarrow's reader takes one-character delimiters only
        source = io.BytesIO(path.read_bytes().replace(b"::", b"\t"))
    else:
        sep, source = ",", path
        if fmt == "movielens-csv":
            if first.split(",") != _MOVIELENS_CSV_HEADER:
                expected = ",".join(_MOVIELENS_CSV_HEADER)
                raise InteractionFileError(f"{path}, line 1: expected header {expected!r}, got {first!r}")
            roles, header = list(_ROLES), True
        else:
            roles, header = _csv_roles(path, first)
    types = {"user": pa.int64(), "item": pa.int64(), "rating": pa.float64(), "timestamp": pa.float64()}
    try:
        table = pacsv.read_csv(
            source,
            read_options=pacsv.ReadOptions(column_names=roles, skip_rows=int(header)),
            parse_options=pacsv.ParseOptions(delimiter="\t" if sep == "::" else sep),
            convert_options=pacsv.ConvertOptions(column_types={r: types[r] for r in roles}),
        )
        bad = [r for r in roles if table[r].null_count] or [
            r for r in ("rating", "timestamp") if r in roles and not np.isfinite(table[r].to_numpy()).all()
        ]
        if bad:
            raise pa.ArrowInvalid(f"missing or non-finite values in column {bad[0]!r}")
    except pa.ArrowInvalid as err:
        where = _locate_bad_line(path, sep, roles, header)
        raise InteractionFileError(f"{path} ({fmt}), {where}; reader said: {err}") from None
    if table.num_rows == 0:
        raise InteractionFileError(f"{path} ({fmt}): no interactions")
    col = {r: table[r].to_numpy() for r in roles}
    # no timestamps: the file order is the clock, one row = one second
    time = np.floor(col["timestamp"]) if "timestamp" in col else np.arange(table.num_rows)
    return Interactions(
        user=col["user"].astype(np.int64),
        item=col["item"].astype(np.int64),
        rating=col["rating"].astype(np.float32) if "rating" in col else None,
        time=time.astype(np.int64),
        fmt=fmt,
    )


# ---------------------------------------------------------------- the timeline


def _ranges(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten the half-open ranges [starts[r], ends[r]): (row r of each element, position)."""
    lengths = np.maximum(ends - starts, 0)
    rows = np.repeat(np.arange(len(starts)), lengths)
    offsets = np.cumsum(lengths) - lengths
    return rows, np.arange(lengths.sum()) - np.repeat(offsets - starts, lengths)


@dataclass(frozen=True)
class _Timeline:
    """Interactions sorted by (user, time): the one index every causal look-up goes through."""

    user: np.ndarray  # [N] dense user index, ascending
    item: np.ndarray  # [N] dense item index
    time: np.ndarray  # [N] int64 seconds, ascending within a user
    positive: np.ndarray  # [N] bool: meets the label rule
    user_start: np.ndarray  # [N] position of the user's first interaction
    user_ids: np.ndarray  # dense user index -> file id
    item_ids: np.ndarray  # dense item index -> file id

    @classmethod
    def build(cls, data: Interactions, min_rating: float) -> "_Timeline":
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


def _train_retriever(tl: _Timeline, fit: np.ndarray, item_map: np.ndarray, cfg: PublicDataConfig) -> HistoryMF:
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


# ---------------------------------------------------------------- requests


@dataclass
class _Retrieved:
    """Requests with their candidates; [R, K] arrays are valid where ``k < length``."""

    pos: np.ndarray  # [R] timeline position of the session's first interaction (the request)
    items: np.ndarray  # [R, K] dense item index, retriever order
    raw: np.ndarray  # [R, K] float64 retriever score
    labels: np.ndarray  # [R, K] int8
    length: np.ndarray  # [R] valid candidates
    future_positives: np.ndarray  # [R] distinct unseen items the user likes in the label window

    def valid(self) -> np.ndarray:
        return np.arange(self.items.shape[1]) < self.length[:, None]

    def take(self, rows: np.ndarray) -> "_Retrieved":
        return _Retrieved(*(getattr(self, f.name)[rows] for f in fields(self)))


def _session_starts(tl: _Timeline, lo: int, hi: float, cfg: PublicDataConfig) -> np.ndarray:
    """Timeline positions of sessions starting in [lo, hi) with enough earlier interactions."""
    pos = np.arange(len(tl.user))
    gap = np.diff(tl.time, prepend=tl.time[0])
    start = (pos == tl.user_start) | (gap > cfg.session_gap_hours * 3600)
    keep = start & (tl.time >= lo) & (tl.time < hi) & (pos - tl.user_start >= cfg.min_history)
    return pos[keep]


@torch.no_grad()
def _retrieve(tl: _Timeline, model: HistoryMF, item_map: np.ndarray, known: np.ndarray, pos: np.ndarray,
              cfg: PublicDataConfig) -> _Retrieved:
    """Top-``candidates`` unseen known items for the requests at ``pos``, with labels."""
    n_items, n_known = len(tl.item_ids), len(known)
    k = min(cfg.candidates, n_known)
    out = _Retrieved(pos, np.zeros((len(pos), k), np.int64), np.zeros((len(pos), k)), np.zeros((len(pos), k), np.int8),
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


def _fit_platt(raw: np.ndarray, labels: np.ndarray, iters: int = 100) -> tuple[float, float] | None:
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


def _squash(raw: np.ndarray, platt: tuple[float, float] | None) -> np.ndarray:
    a, b = platt or (1.0, 0.0)
    return (1 / (1 + np.exp(-(a * raw + b)))).astype(np.float32)


def rebase_to_days(time: np.ndarray, days: int, start: dt.date) -> tuple[np.ndarray, np.ndarray]:
    """Map real times onto ``days`` equal-count UTC days from ``start``, keeping their order.

    Returns (event_time as datetime64[us], ds as ``YYYY-MM-DD`` strings). Requests are cut into
    days by time rank (so every day gets one, even when real times tie), and each day's span of
    real time, from its first request to the next day's first, is mapped linearly onto
    [00:00, 24:00) of its date.
    """
    order = np.argsort(time, kind="stable")
    day = np.empty(len(time), np.int64)
    day[order] = np.arange(len(time)) * days // len(time)
    first = np.searchsorted(day[order], np.arange(days + 1))  # rank of each day's first request
    edges = np.r_[time[order][first[:-1]], time.max() + 1]
    lo, hi = edges[day], edges[day + 1]
    frac = (time - lo) / np.maximum(hi - lo, 1)
    day_us = np.int64(_SECONDS_PER_DAY * 1_000_000)
    start_us = np.datetime64(start, "us").astype(np.int64)
    # a time tied with the next day's first lands at the end of its own day
    event_us = start_us + day * day_us + np.minimum((frac * day_us).astype(np.int64), day_us - 1)
    event_time = event_us.astype("datetime64[us]")
    return event_time, np.datetime_as_string(event_time.astype("datetime64[D]"))


# ---------------------------------------------------------------- assembling the table


@dataclass(frozen=True)
class PreparedLogs:
    """The request_logs table and what the summary reports."""

    table: pa.Table
    source_time: np.ndarray  # [R] each row's real request time (Unix seconds), for audits
    users: int
    items: int
    interactions: int
    retriever_items: int
    periods: tuple[int, int]  # calibration and written periods start at these Unix times
    calibration_requests: int
    calibration: tuple[float, float] | None  # Platt (a, b); None: plain sigmoid
    positives_rate: float
    auc: float
    recall: float  # pooled: future liked unseen items in the top-K / all of them

    def requests_per_day(self) -> dict[str, int]:
        ds, counts = np.unique(self.table[RL.ds].to_numpy(), return_counts=True)
        return dict(zip(ds.tolist(), counts.tolist()))


def pooled_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC over all (score, label) pairs (Mann-Whitney, ties count one half); NaN if one class."""
    pos = labels.astype(bool)
    n1, n0 = pos.sum(), (~pos).sum()
    if n1 == 0 or n0 == 0:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _list_array(values: np.ndarray, lengths: np.ndarray, name: str) -> pa.Array:
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values), type=REQUEST_LOGS.arrow.field(name).type)


def build_request_logs(data: Interactions, cfg: PublicDataConfig) -> PreparedLogs:
    """The whole preparation in memory: split, retriever, calibration, requests, labels, ds."""
    tl = _Timeline.build(data, cfg.min_rating)
    ordered = np.sort(tl.time)
    t_calib = ordered[int(cfg.retriever_fraction * len(ordered))]
    t_out = ordered[int((cfg.retriever_fraction + cfg.calibration_fraction) * len(ordered))]
    fit = tl.time < t_calib
    known = np.unique(tl.item[fit])
    item_map = np.full(len(tl.item_ids), -1, np.int64)
    item_map[known] = np.arange(len(known))
    model = _train_retriever(tl, fit, item_map, cfg)

    calib_requests = _session_starts(tl, t_calib, t_out - cfg.label_window_s, cfg)
    calib = _retrieve(tl, model, item_map, known, calib_requests, cfg)
    platt = _fit_platt(calib.raw[calib.valid()], calib.labels[calib.valid()])
    res = _retrieve(tl, model, item_map, known, _session_starts(tl, t_out, math.inf, cfg), cfg)
    keep = res.length > 0
    if keep.sum() < cfg.days:
        raise ValueError(f"{keep.sum()} requests in the written period, fewer than days={cfg.days}: "
                         "lower days, min_history or the split fractions")
    res = res.take(keep)

    source_time = tl.time[res.pos]
    start = dt.date.fromisoformat(cfg.start_date) if cfg.start_date else dt.datetime.fromtimestamp(
        int(source_time.min()), dt.timezone.utc).date()
    event_time, ds = rebase_to_days(source_time, cfg.days, start)
    order = np.lexsort((tl.user[res.pos], event_time))
    res = res.take(order)
    source_time, event_time, ds = source_time[order], event_time[order], ds[order]

    valid = res.valid()
    hist_len = np.minimum(res.pos - tl.user_start[res.pos], cfg.history_len)
    hist = tl.histories(res.pos, cfg.history_len, -1)
    users = tl.user_ids[tl.user[res.pos]]
    scores = _squash(res.raw[valid], platt)
    labels = res.labels[valid]
    columns = {
        RL.request_id: pc.binary_join_element_wise(pa.array(users).cast(pa.string()),
                                                   pa.array(source_time).cast(pa.string()), "-"),
        RL.user_id: pa.array(users, pa.int64()),
        RL.event_time: pa.array(event_time, REQUEST_LOGS.arrow.field(RL.event_time).type),
        RL.ds: pa.array(ds, pa.string()),
        RL.history_item_ids: _list_array(tl.item_ids[hist[hist >= 0]], hist_len, RL.history_item_ids),
        RL.candidate_item_ids: _list_array(tl.item_ids[res.items[valid]], res.length, RL.candidate_item_ids),
        RL.retriever_scores: _list_array(scores, res.length, RL.retriever_scores),
        RL.labels: _list_array(labels, res.length, RL.labels),
        RL.exposed: pa.nulls(len(users), REQUEST_LOGS.arrow.field(RL.exposed).type),
        RL.true_click_prob: pa.nulls(len(users), REQUEST_LOGS.arrow.field(RL.true_click_prob).type),
    }
    table = pa.Table.from_arrays([columns[n] for n in REQUEST_LOGS.names], schema=REQUEST_LOGS.arrow)
    return PreparedLogs(
        table=table,
        source_time=source_time,
        users=len(tl.user_ids),
        items=len(tl.item_ids),
        interactions=len(data),
        retriever_items=len(known),
        periods=(int(t_calib), int(t_out)),
        calibration_requests=len(calib.pos),
        calibration=platt,
        positives_rate=float(labels.mean()),
        auc=pooled_auc(scores, labels),
        recall=float(labels.sum() / max(res.future_positives.sum(), 1)),
    )


# ---------------------------------------------------------------- writing


def ensure_writable(lake: Lake, mode: str = "error") -> bool:
    """Raise FileExistsError if request_logs holds rows and ``mode`` is not ``"overwrite"``;
    returns whether the table exists. Jobs call it before the expensive work, too."""
    from deltalake import DeltaTable

    if mode not in ("error", "overwrite"):
        raise ValueError(f"mode {mode!r}: one of 'error', 'overwrite'")
    uri, opts = lake.table_uri("request_logs"), lake.storage_options()
    exists = DeltaTable.is_deltatable(uri, storage_options=opts)
    if exists and mode != "overwrite" and DeltaTable(uri, storage_options=opts).count() > 0:
        raise FileExistsError(f"{uri} already holds request logs; pass --mode overwrite to replace them")
    return exists


def write_request_logs(table: pa.Table, lake: Lake, mode: str = "error") -> int:
    """Write to the lake's request_logs partitioned by ds; returns the new table version.

    ``mode="error"`` refuses an existing non-empty table; ``"overwrite"`` replaces it (schema too).
    """
    from deltalake import DeltaTable, write_deltalake

    exists = ensure_writable(lake, mode)
    uri, opts = lake.table_uri("request_logs"), lake.storage_options()
    write_deltalake(uri, table, partition_by=[RL.ds], mode="overwrite" if exists else "error",
                    schema_mode="overwrite" if exists else None, storage_options=opts)
    return DeltaTable(uri, storage_options=opts).version()


def _date(unix_s: int) -> str:
    return dt.datetime.fromtimestamp(unix_s, dt.timezone.utc).date().isoformat()


def format_summary(logs: PreparedLogs, cfg: PublicDataConfig) -> str:
    """Human-readable summary lines (the job prints them)."""
    per_day = logs.requests_per_day()
    counts = np.array(list(per_day.values()))
    days = list(per_day)
    calib = "none, plain sigmoid" if logs.calibration is None else "Platt sigmoid({:.3f}*s{:+.3f})".format(
        *logs.calibration)
    return "\n".join([
        f"data: {logs.users:,} users, {logs.items:,} items, {logs.interactions:,} interactions",
        f"split: retriever trained before {_date(logs.periods[0])} ({logs.retriever_items:,} items), "
        f"calibrated on {logs.calibration_requests:,} requests before {_date(logs.periods[1])}, "
        f"written: requests from {_date(logs.periods[1])} on",
        f"requests: {logs.table.num_rows:,} on {len(days)} days {days[0]}..{days[-1]}, "
        f"per day min {counts.min()} median {int(np.median(counts))} max {counts.max()}",
        "requests per day: " + " ".join(str(c) for c in counts),
        f"labels: positives rate {logs.positives_rate:.4f} over {cfg.candidates} candidates/request "
        f"(1 = rated >= {cfg.min_rating:g} within {cfg.label_window_days:g} days after the request)",
        f"retriever: AUC {logs.auc:.4f} (pooled over candidates), recall@{cfg.candidates} of future "
        f"positives {logs.recall:.4f}, scores = {calib}",
    ])
