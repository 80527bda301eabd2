"""Implicit-feedback benchmark splits (NGCF, LightGCN, KGAT: ``user item item ...`` per line) turned
into ``request_logs``, the way the platform would have logged them.

The files have a train, a test and optionally a valid part, but no times, no requests and no
retriever; this module replays them as days of requests filled by a real retriever (the BPR
matrix factorisation and Platt calibration of :mod:`dnr.datasets.public_retriever`). The files are
read by :func:`dnr.datasets.interactions.load_user_lines`; an item repeated on one line counts once.

* **Split of train**: each user's train items are cut at random (seeded hash of user, item) into a
  *retriever part* (``retriever_fraction`` of them, at least one, and at least one left over when
  the user has two or more) and a *label part*. Both keep the file order.
* **Retriever**: trained on the retriever parts only (file order stands in for time: each item's
  history is the items before it on the line). Its user factor is folded in from the history, so
  on later days it takes the longer history with no refit; candidates are the top ``candidates``
  items it knows, excluding the user's excluded items below.
* **Training days** (``train_days``, each request's day a seeded hash of user and request): history
  = the most recent ``history_len`` items of the retriever part; candidates exclude the *whole*
  retriever part (not only the truncated history: an item the user had, labelled 0, would be a
  false negative); labels = 1 iff the candidate is in the label part, which the retriever never
  saw. ``requests_per_user`` > 1 adds requests whose history is a random subset (seeded, a
  uniform size from 1 to all) of the retriever part: other user factors, other candidates, the
  same labels; more training volume, not new information.
* **Valid day** (only with a valid file), the day after the training days: history = the train
  items, candidates exclude every train item, labels = the valid items.
* **Test day**, the last day D: history = train + valid items (train first, file order),
  candidates exclude every train and valid item, labels = the test items. On both held-out days
  a file's items already in an earlier file are not labels (they can never be candidates).
* **Scores**: Platt scaling fitted on the training days' candidates against their labels, then
  applied to every day. Neither the retriever nor the calibration sees anything of the valid or
  the test file, so ``python jobs/train_daily.py --lake L --ds D`` trains on the days before D
  (the valid day included: it is the day before) and replays a test day nothing has seen.
* **Skipped**: a request is logged only when its label set is non-empty (label part, valid or test
  items not already used): the benchmarks evaluate only users with test items, and a missing
  line says nothing about what a user would have clicked. Skipped users are counted per day kind.
* **Rows**: ``request_id`` = ``{user}-{day index}-{k}``, ``user_id`` the file's id, ``event_time`` a
  seeded hash spread through its ``ds`` day (UTC, ``ds`` from ``start_date``), rows ordered by time;
  ``exposed`` and ``true_click_prob`` null.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from dnr.data.hashing import hash_to_unit, splitmix64
from dnr.datasets.interactions import Interactions, Lists, UserLines
from dnr.datasets.public import PublicDataConfig
from dnr.datasets.public_retriever import HistoryMF, Timeline, fit_platt, squash, train_retriever
from dnr.schemas import REQUEST_LOGS

RL = REQUEST_LOGS.col
LINES_FORMAT = "lines"
KINDS = ("train", "valid", "test")
_DAY_US = 86_400 * 1_000_000


@dataclass(frozen=True)
class LinesConfig:
    """How train/valid/test split files become request logs."""

    train_days: int = 3
    """Days the training requests are spread over, before the valid and test days."""
    start_date: str = "2024-01-01"
    """ds of the first training day (YYYY-MM-DD)."""
    candidates: int = 50
    """Candidates per request (fewer when the user has almost every known item)."""
    history_len: int = 50
    """Most recent items kept as the history (also the retriever's user input)."""
    retriever_fraction: float = 0.5
    """Share of each user's train items the retriever is trained on; the rest are training labels."""
    requests_per_user: int = 1
    """Training requests per user; each one after the first has a random subset of the retriever part
    as its history."""
    seed: int = 0
    """Seed of the split, the days, the subsets and the retriever."""
    dim: int = 64
    """Retriever factor dimension."""
    epochs: int = 5
    """Retriever training epochs over the retriever part."""
    batch_size: int = 1024
    lr: float = 0.01
    l2: float = 1e-2
    """L2 penalty on the factors a BPR step touches."""

    def __post_init__(self):
        checks = [
            (self.train_days >= 1, "train_days", ">= 1"),
            (self.candidates >= 1, "candidates", ">= 1"),
            (self.history_len >= 1, "history_len", ">= 1"),
            (0 < self.retriever_fraction < 1, "retriever_fraction", "in (0, 1)"),
            (self.requests_per_user >= 1, "requests_per_user", ">= 1"),
            (self.dim >= 1 and self.epochs >= 1 and self.batch_size >= 1, "dim/epochs/batch_size", ">= 1"),
        ]
        for ok, name, want in checks:
            if not ok:
                raise ValueError(f"lines data config {name}={getattr(self, name, None)!r}: must be {want}")
        dt.date.fromisoformat(self.start_date)

    def retriever_config(self) -> PublicDataConfig:
        """The settings :func:`train_retriever` reads, in the config type it takes."""
        return PublicDataConfig(candidates=self.candidates, history_len=self.history_len, seed=self.seed,
                                dim=self.dim, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, l2=self.l2)


def _hash(seed: int, *columns: np.ndarray) -> np.ndarray:
    """A seeded uint64 hash of int columns, element-wise: per user, request or item, whatever else
    is in the files."""
    h = splitmix64(columns[0], seed)
    for c in columns[1:]:
        h = splitmix64(h ^ np.asarray(c).astype(np.uint64), seed)
    return h


# ---------------------------------------------------------------- the files, the split, the requests


@dataclass(frozen=True)
class SplitData:
    """The split files over one dense user and item index; rows absent from a file are empty."""

    user_ids: np.ndarray  # [U] dense user -> file id
    item_ids: np.ndarray  # [I] dense item -> file id
    files: dict[str, Lists]  # kind -> [U] rows of dense items, each once, file order; "valid" optional
    lines: dict[str, int]  # kind -> user lines in the file

    @classmethod
    def from_files(cls, files: dict[str, UserLines]) -> "SplitData":
        user_ids = np.unique(np.concatenate([f.user for f in files.values()]))
        item_ids = np.unique(np.concatenate([f.items.items for f in files.values()]))
        lists = {}
        for kind, f in files.items():
            row = np.repeat(np.searchsorted(user_ids, f.user), f.items.lengths)
            order = np.argsort(row, kind="stable")
            items = np.searchsorted(item_ids, f.items.items)[order]
            lists[kind] = Lists.from_rows(row[order], items, len(user_ids)).first_occurrences(len(item_ids))
        return cls(user_ids, item_ids, lists, {kind: len(f.user) for kind, f in files.items()})


def split_train(data: SplitData, cfg: LinesConfig) -> tuple[Lists, Lists]:
    """Each user's train items cut at random into (retriever part, label part), file order kept."""
    train = data.files["train"]
    n = train.lengths
    size = np.clip(np.floor(cfg.retriever_fraction * n + 0.5), 1, np.maximum(n - 1, 1)).astype(np.int64)
    rank = train.random_rank(_hash(cfg.seed, data.user_ids[train.row()], data.item_ids[train.items]))
    fit = rank < np.repeat(size, n)
    return train.select(fit), train.select(~fit)


@dataclass(frozen=True)
class Requests:
    """Requests before retrieval, one row each."""

    kind: np.ndarray  # [R] index into KINDS
    user: np.ndarray  # [R] dense user
    k: np.ndarray  # [R] request number of the user on its day kind
    day: np.ndarray  # [R] day index from start_date
    history: Lists  # [R] at most history_len items, file order
    excluded: Lists  # [R] never candidates
    positives: Lists  # [R] the label-1 items

    @classmethod
    def make(cls, kind: str, user, k, day, history: Lists, excluded: Lists, positives: Lists,
             cfg: LinesConfig) -> "Requests":
        return cls(np.full(len(user), KINDS.index(kind)), user, k, day, history.tail(cfg.history_len),
                   excluded, positives)

    @classmethod
    def stack(cls, parts: list["Requests"]) -> "Requests":
        return cls(*(np.concatenate([getattr(p, n) for p in parts]) for n in ("kind", "user", "k", "day")),
                   *(Lists.stack([getattr(p, n) for p in parts]) for n in ("history", "excluded", "positives")))

    def take(self, rows: np.ndarray) -> "Requests":
        return Requests(self.kind[rows], self.user[rows], self.k[rows], self.day[rows], self.history.take(rows),
                        self.excluded.take(rows), self.positives.take(rows))

    def event_us(self, data: SplitData, cfg: LinesConfig) -> np.ndarray:
        """[R] event time, Unix microseconds: its day from start_date, a hash spread through it."""
        spread = hash_to_unit(_hash(cfg.seed + 4, data.user_ids[self.user], self.k, self.kind)) * _DAY_US
        start = np.datetime64(dt.date.fromisoformat(cfg.start_date), "us").astype(np.int64)
        return start + self.day * _DAY_US + spread.astype(np.int64)


def training_requests(data: SplitData, fit: Lists, label: Lists, cfg: LinesConfig) -> Requests:
    """``requests_per_user`` requests of every user with label-part items, on the training days."""
    labelled = np.flatnonzero(label.lengths > 0)
    users = np.tile(labelled, cfg.requests_per_user)
    k = np.repeat(np.arange(cfg.requests_per_user), len(labelled))
    file_user = data.user_ids[users]
    seen = fit.take(users)
    # request k > 0: a random subset of the retriever part, of a uniform size in [1, all]
    size = 1 + np.floor(hash_to_unit(_hash(cfg.seed + 1, file_user, k)) * seen.lengths).astype(np.int64)
    rank = seen.random_rank(_hash(cfg.seed + 2, file_user[seen.row()], k[seen.row()], seen.items))
    keep = (np.repeat(k, seen.lengths) == 0) | (rank < np.repeat(size, seen.lengths))
    day = (_hash(cfg.seed + 3, file_user, k) % np.uint64(cfg.train_days)).astype(np.int64)
    return Requests.make("train", users, k, day, seen.select(keep), seen, label.take(users), cfg)


def held_out_requests(data: SplitData, cfg: LinesConfig) -> list[Requests]:
    """The valid day (when there is a valid file) and the test day: every earlier file's items are
    the history and never candidates; the file's items not among them are the labels."""
    width, day = len(data.item_ids), cfg.train_days
    used, out = data.files["train"], []
    for kind in [k for k in ("valid", "test") if k in data.files]:
        fresh = data.files[kind].minus(used, width)
        users = np.flatnonzero(fresh.lengths > 0)
        earlier = used.take(users)
        out.append(Requests.make(kind, users, np.zeros(len(users), np.int64), np.full(len(users), day),
                                 earlier, earlier, fresh.take(users), cfg))
        used, day = used.concat(data.files[kind]), day + 1
    return out


# ---------------------------------------------------------------- retrieval


def fit_retriever(fit: Lists, cfg: LinesConfig) -> tuple[HistoryMF, np.ndarray]:
    """BPR on the retriever parts, file position as the clock; returns the model and its items'
    dense indices (retriever item r is dense item ``known[r]``)."""
    data = Interactions(user=fit.row(), item=fit.items, rating=None, time=fit.rank(), fmt=LINES_FORMAT)
    tl = Timeline.build(data, min_rating=0.0)  # its items: the fit's distinct dense items, ascending
    model = train_retriever(tl, np.ones(len(fit.items), bool), np.arange(len(tl.item_ids)), cfg.retriever_config())
    return model, tl.item_ids


@dataclass(frozen=True)
class Candidates:
    """Retrieved lists; [R, K] arrays are valid where ``k < length``."""

    items: np.ndarray  # [R, K] dense items, retriever order
    raw: np.ndarray  # [R, K] float64 retriever score
    labels: np.ndarray  # [R, K] int8
    length: np.ndarray  # [R]

    def valid(self) -> np.ndarray:
        return np.arange(self.items.shape[1]) < self.length[:, None]

    def take(self, rows: np.ndarray) -> "Candidates":
        return Candidates(self.items[rows], self.raw[rows], self.labels[rows], self.length[rows])


@torch.no_grad()
def retrieve(model: HistoryMF, known: np.ndarray, num_items: int, req: Requests, cfg: LinesConfig) -> Candidates:
    """Top-``candidates`` known items per request, its excluded items masked, labelled by its positives."""
    n_known, rows = len(known), len(req.user)
    k = min(cfg.candidates, n_known)
    to_retriever = np.full(num_items, -1, np.int64)
    to_retriever[known] = np.arange(n_known)
    out = Candidates(np.zeros((rows, k), np.int64), np.zeros((rows, k)), np.zeros((rows, k), np.int8),
                     np.zeros(rows, np.int64))
    chunk = max(1, (1 << 24) // n_known)  # bounds the [chunk, items] float32 score matrix to ~64 MiB
    for lo in range(0, rows, chunk):
        hi = min(lo + chunk, rows)
        history = req.history.slice(lo, hi).padded(cfg.history_len, n_known, to_retriever)
        # float32 as scored: a float64 copy of the [chunk, items] matrix cost a third of the time
        scores = model.score(model.user(torch.from_numpy(history)))
        excluded = req.excluded.slice(lo, hi)
        at = to_retriever[excluded.items]
        scores[torch.from_numpy(excluded.row()[at >= 0]), torch.from_numpy(at[at >= 0])] = -np.inf
        top = torch.topk(scores, k, dim=1)
        items = known[top.indices.numpy()]
        out.items[lo:hi], out.raw[lo:hi] = items, top.values.double().numpy()
        out.length[lo:hi] = np.isfinite(out.raw[lo:hi]).sum(1)
        keys = np.arange(hi - lo)[:, None] * num_items + items
        out.labels[lo:hi] = np.isin(keys, req.positives.slice(lo, hi).keys(num_items))
    return out


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class PreparedLines:
    """The request_logs table and what the summary reports."""

    table: pa.Table  # ordered by event_time
    kind: np.ndarray  # [R] each row's day kind, a name of KINDS
    data: SplitData
    retriever_part: Lists  # [U] the items the retriever was trained on
    label_part: Lists  # [U] the training days' labels
    retriever_items: int
    calibration: tuple[float, float] | None  # Platt (a, b); None: plain sigmoid
    kinds: dict[str, dict[str, float]]  # kind -> requests, skipped users, positives rate, recall

    def requests_per_day(self) -> dict[str, int]:
        ds, counts = np.unique(self.table[RL.ds].to_numpy(), return_counts=True)
        return dict(zip(ds.tolist(), counts.tolist()))


def _list_array(values: np.ndarray, lengths: np.ndarray, name: str) -> pa.Array:
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values), type=REQUEST_LOGS.arrow.field(name).type)


def _table(data: SplitData, req: Requests, cand: Candidates, event_us: np.ndarray, platt) -> pa.Table:
    valid, users = cand.valid(), data.user_ids[req.user]
    event_time = event_us.astype("datetime64[us]")
    request_id = [f"{u}-{d}-{k}" for u, d, k in zip(users.tolist(), req.day.tolist(), req.k.tolist())]
    columns = {
        RL.request_id: pa.array(request_id, pa.string()),
        RL.user_id: pa.array(users, pa.int64()),
        RL.event_time: pa.array(event_time, REQUEST_LOGS.arrow.field(RL.event_time).type),
        RL.ds: pa.array(np.datetime_as_string(event_time.astype("datetime64[D]")), pa.string()),
        RL.history_item_ids: _list_array(data.item_ids[req.history.items], req.history.lengths, RL.history_item_ids),
        RL.candidate_item_ids: _list_array(data.item_ids[cand.items[valid]], cand.length, RL.candidate_item_ids),
        RL.retriever_scores: _list_array(squash(cand.raw[valid], platt), cand.length, RL.retriever_scores),
        RL.labels: _list_array(cand.labels[valid], cand.length, RL.labels),
    }
    for name in (RL.exposed, RL.true_click_prob):
        columns[name] = pa.nulls(len(users), REQUEST_LOGS.arrow.field(name).type)
    return pa.Table.from_arrays([columns[n] for n in REQUEST_LOGS.names], schema=REQUEST_LOGS.arrow)


def _kind_stats(data: SplitData, req: Requests, cand: Candidates) -> dict[str, dict[str, float]]:
    labels = np.where(cand.valid(), cand.labels, 0)
    stats = {}
    for code, kind in enumerate(KINDS):
        rows = req.kind == code
        if kind in data.files:
            stats[kind] = {
                "requests": int(rows.sum()),
                "skipped": data.lines[kind] - len(np.unique(req.user[rows])),
                "positives_rate": float(labels[rows].sum() / max(cand.length[rows].sum(), 1)),
                "recall": float(labels[rows].sum() / max(req.positives.lengths[rows].sum(), 1)),
            }
    return stats


def build_lines_logs(data: SplitData, cfg: LinesConfig) -> PreparedLines:
    """The whole preparation in memory: split, retriever, requests, calibration, table."""
    fit, label = split_train(data, cfg)
    if len(fit.items) == 0:
        raise ValueError("the train file has no interactions: nothing to train the retriever on")
    model, known = fit_retriever(fit, cfg)
    req = Requests.stack([training_requests(data, fit, label, cfg), *held_out_requests(data, cfg)])
    cand = retrieve(model, known, len(data.item_ids), req, cfg)
    event_us = req.event_us(data, cfg)
    order = np.lexsort((data.user_ids[req.user], event_us))
    order = order[cand.length[order] > 0]  # a user who has every known item gets no request
    req, cand, event_us = req.take(order), cand.take(order), event_us[order]
    if not (req.kind == KINDS.index("test")).any():
        raise ValueError("no test-day request: no user has a test item that is not in train or valid")
    calibrate = (req.kind == KINDS.index("train"))[:, None] & cand.valid()
    platt = fit_platt(cand.raw[calibrate], cand.labels[calibrate])
    return PreparedLines(
        table=_table(data, req, cand, event_us, platt),
        kind=np.array(KINDS)[req.kind],
        data=data,
        retriever_part=fit,
        label_part=label,
        retriever_items=len(known),
        calibration=platt,
        kinds=_kind_stats(data, req, cand),
    )


def format_summary(prep: PreparedLines, cfg: LinesConfig) -> str:
    """Human-readable summary lines (the job prints them)."""
    data, per_day = prep.data, prep.requests_per_day()
    kind_of_day = dict(zip(prep.table[RL.ds].to_pylist(), prep.kind.tolist()))
    calib = "none, plain sigmoid" if prep.calibration is None else "Platt sigmoid({:.3f}*s{:+.3f})".format(
        *prep.calibration)
    lines = [f"data: {len(data.user_ids):,} users, {len(data.item_ids):,} items; " + ", ".join(
        f"{kind} {data.lines[kind]:,} lines {len(data.files[kind].items):,} interactions" for kind in data.files)]
    lines.append(f"split of train: retriever part {len(prep.retriever_part.items):,} interactions on "
                 f"{prep.retriever_items:,} items, label part {len(prep.label_part.items):,}")
    lines.append("requests per day: " + ", ".join(f"{d} {kind_of_day[d]} {n:,}" for d, n in per_day.items()))
    for kind, s in prep.kinds.items():
        lines.append(f"{kind}: {s['requests']:,} requests, {s['skipped']:,} users skipped (no label items), "
                     f"positives rate {s['positives_rate']:.4f}, retriever recall@{cfg.candidates} {s['recall']:.4f}")
    lines.append(f"scores: {calib}, fitted on the training days")
    return "\n".join(lines)
