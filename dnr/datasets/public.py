"""Public interaction data (MovieLens and the like) turned into ``request_logs``.

"Public" means a public dataset: a ``user,item[,rating,timestamp]`` file such as MovieLens. The
name is kept because ``jobs/prepare_public.py`` and ``PublicDataConfig`` carry it to users.

A ratings file has no requests, no retrieval and no exposures, so this module replays one: it
invents the requests a platform would have logged and runs a real retriever to fill them. The
file is read by :mod:`dnr.datasets.interactions`, the retriever and its score calibration live in
:mod:`dnr.datasets.public_retriever`; here are the config, the split, the requests, the table and
its write.

* **Split, by time** (interaction quantiles): the earliest ``retriever_fraction`` trains the
  retriever; requests of the next ``calibration_fraction`` whose label window closes before the
  written period calibrate its scores; requests of the rest are written. Nothing from the written
  period reaches the retriever or the calibration.
* **Requests**: a user's interactions are cut into sessions (a gap > ``session_gap_hours`` starts a
  new one); each session start is a request at the time of its first interaction. Everything the
  user did strictly before that time is *seen*: their history is the most recent seen items
  (oldest first, at most ``history_len``), and seen items are never candidates.
* **Retriever**: BPR matrix factorisation whose user factor is folded in from the history;
  candidates are the top ``candidates`` unseen items known to the retriever (why folded in:
  :mod:`dnr.datasets.public_retriever`).
* **Scores**: Platt scaling, ``sigmoid(a·s + b)``, fitted on the calibration period's candidates
  against their labels (why not a plain sigmoid: :mod:`dnr.datasets.public_retriever`).
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
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dnr.data import delta_files
from dnr.datasets.interactions import Interactions
from dnr.datasets.public_config import PublicDataConfig
from dnr.datasets.public_retriever import Timeline, fit_platt, retrieve, squash, train_retriever
from dnr.schemas import REQUEST_LOGS
from dnr.storage import Lake

RL = REQUEST_LOGS.col
_SECONDS_PER_DAY = 86_400


# ---------------------------------------------------------------- requests


def _session_starts(tl: Timeline, lo: int, hi: float, cfg: PublicDataConfig) -> np.ndarray:
    """Timeline positions of sessions starting in [lo, hi) with enough earlier interactions."""
    pos = np.arange(len(tl.user))
    gap = np.diff(tl.time, prepend=tl.time[0])
    start = (pos == tl.user_start) | (gap > cfg.session_gap_hours * 3600)
    keep = start & (tl.time >= lo) & (tl.time < hi) & (pos - tl.user_start >= cfg.min_history)
    return pos[keep]


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
    tl = Timeline.build(data, cfg.min_rating)
    ordered = np.sort(tl.time)
    t_calib = ordered[int(cfg.retriever_fraction * len(ordered))]
    t_out = ordered[int((cfg.retriever_fraction + cfg.calibration_fraction) * len(ordered))]
    fit = tl.time < t_calib
    known = np.unique(tl.item[fit])
    item_map = np.full(len(tl.item_ids), -1, np.int64)
    item_map[known] = np.arange(len(known))
    model = train_retriever(tl, fit, item_map, cfg)

    calib_requests = _session_starts(tl, t_calib, t_out - cfg.label_window_s, cfg)
    calib = retrieve(tl, model, item_map, known, calib_requests, cfg)
    platt = fit_platt(calib.raw[calib.valid()], calib.labels[calib.valid()])
    res = retrieve(tl, model, item_map, known, _session_starts(tl, t_out, math.inf, cfg), cfg)
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
    scores = squash(res.raw[valid], platt)
    labels = res.labels[valid]
    table = _logs_table(tl, res, source_time, event_time, ds, scores, labels, cfg)
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


def _logs_table(tl: Timeline, res, source_time: np.ndarray, event_time: np.ndarray, ds: np.ndarray,
                scores: np.ndarray, labels: np.ndarray, cfg: PublicDataConfig) -> pa.Table:
    """The retrieved requests as ``request_logs`` rows (the contract's schema)."""
    valid = res.valid()
    hist_len = np.minimum(res.pos - tl.user_start[res.pos], cfg.history_len)
    hist = tl.histories(res.pos, cfg.history_len, -1)
    users = tl.user_ids[tl.user[res.pos]]
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
    return pa.Table.from_arrays([columns[n] for n in REQUEST_LOGS.names], schema=REQUEST_LOGS.arrow)


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
    from deltalake import DeltaTable

    exists = ensure_writable(lake, mode)
    # one Parquet file per day, page checksums on (dnr.data.delta_files), in one commit
    written = delta_files.write_files(table.cast(REQUEST_LOGS.arrow), lake.root, "request_logs", RL.ds)
    delta_files.commit_files(lake, "request_logs", REQUEST_LOGS, written.to_pylist(), partition_by=RL.ds,
                             mode="overwrite" if exists else "append",
                             metadata={"written_by": "dnr.datasets.public"})
    return DeltaTable(lake.table_uri("request_logs"), storage_options=lake.storage_options()).version()


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
