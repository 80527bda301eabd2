"""The synthetic world's request logs: :func:`make_requests` and the Ray Data writer of
``request_logs`` (:func:`write_request_logs`). The world's parameters and its users and items
are :mod:`dnr.data.synth_world`; the two names stay as they are because ``jobs/generate_logs.py``,
the benchmarks and users' scripts import ``dnr.data.synth.write_request_logs``.

The world, per request (all randomness is stateless hashing of ids, so any slice of any day can
be generated alone, on any worker, in any order, and ``num_users=10**9`` costs nothing):

* **Users and items** (:mod:`dnr.data.synth_world`, with :class:`WorldConfig`) have latent
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
``REQUEST_LOGS.arrow``); :func:`write_request_logs` is the Ray Data driver that writes days of
it into the lake's Delta table.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from dnr.data import delta_files
from dnr.data.hashing import splitmix64
from dnr.data.synth_world import (
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
from dnr.schemas import PARTITION_COLUMN
from dnr.schemas import REQUEST_LOGS as RL
from dnr.storage import Lake

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
    noise = normals(rkey, c.pool_size + c.pool_size % 2, s["retr_noise"])[:, : c.pool_size]
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


# --------------------------------------------------------------------------------------------
# The Ray Data driver: days of requests into the lake's request_logs Delta table
# --------------------------------------------------------------------------------------------

#: the first day written when the table is empty and no start day is given
DEFAULT_START = dt.date(2024, 1, 1)


class DaysExistError(ValueError):
    """The table already holds a day the run would append (appending would double it)."""


class SchemaMismatchError(ValueError):
    """The table's columns are not the ones written here (the platform added a column or changed
    a type): the commit would refuse the files, or worse, add files of another type."""


@dataclass(frozen=True)
class WritePlan:
    """The days one :func:`write_request_logs` run writes, checked against the table as it is."""

    start: dt.date
    days: tuple[str, ...]
    """``ds`` of every day written, in order."""
    replaced: tuple[str, ...]
    """Days the table holds already, replaced (only with ``overwrite_days``)."""


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


def _open(lake: Lake):
    """``request_logs`` as a DeltaTable; None when it does not exist yet."""
    from deltalake import DeltaTable

    uri, opts = lake.table_uri("request_logs"), lake.storage_options()
    return DeltaTable(uri, storage_options=opts) if DeltaTable.is_deltatable(uri, storage_options=opts) else None


_NOT_TYPE = frozenset({"nullable", "containsNull", "valueContainsNull", "metadata"})


def _bare(delta_type):
    """A Delta type without its nullability and metadata: a nullable column takes our rows too."""
    if isinstance(delta_type, dict):
        return {k: _bare(v) for k, v in delta_type.items() if k not in _NOT_TYPE}
    return [_bare(v) for v in delta_type] if isinstance(delta_type, list) else delta_type


def _spell(delta_type) -> str:
    return delta_type if isinstance(delta_type, str) else json.dumps(delta_type, separators=(",", ":"))


def schema_differences(table) -> list[str]:
    """How ``table`` (a ``request_logs`` DeltaTable) differs from what is written here, one
    phrase per column (name and type; nullability aside), then the column order and partitioning,
    which the commit also needs to match; empty when files written here can be added to it."""
    have = {f["name"]: _bare(f["type"]) for f in json.loads(table.schema().to_json())["fields"]}
    want = {f["name"]: _bare(f["type"]) for f in RL.delta_json["fields"]}
    diffs = [f"{n} (in the table, not written here)" for n in have if n not in want]
    diffs += [f"{n} (written here, not in the table)" for n in want if n not in have]
    diffs += [f"{n} ({_spell(have[n])} in the table, {_spell(want[n])} written here)"
              for n in want if n in have and have[n] != want[n]]
    if not diffs and list(have) != list(want):
        diffs.append(f"the columns in another order ({', '.join(have)})")
    partitions = table.metadata().partition_columns
    if partitions != [PARTITION_COLUMN]:
        diffs.append(f"partitioned by {', '.join(partitions) or 'nothing'}, not {PARTITION_COLUMN}")
    return diffs


def plan_write(lake: Lake, start: dt.date | None = None, days: int = 1,
               overwrite_days: bool = False) -> WritePlan:
    """The days a run writes, checked on the table's metadata alone (no Ray, no file written):
    refuses a table whose schema is not the one written here (:class:`SchemaMismatchError`,
    naming the columns) and a day the table holds already (:class:`DaysExistError`) unless
    ``overwrite_days``. ``jobs/generate_logs.py`` calls it before starting Ray."""
    if days < 1:
        raise ValueError(f"days={days} must be >= 1")
    table = _open(lake)
    uri = lake.table_uri("request_logs")
    if table is not None and (diffs := schema_differences(table)):
        raise SchemaMismatchError(f"{uri} differs from the request_logs schema written here in: "
                                  f"{'; '.join(diffs)}. Nothing was written; migrate the table, or "
                                  "write to another lake.")
    existing = sorted({p[PARTITION_COLUMN] for p in table.partitions()}) if table is not None else []
    if start is None:
        start = dt.date.fromisoformat(existing[-1]) + dt.timedelta(days=1) if existing else DEFAULT_START
    names = tuple((start + dt.timedelta(days=i)).isoformat() for i in range(days))
    clash = tuple(sorted(set(names) & set(existing)))
    if clash and not overwrite_days:
        raise DaysExistError(
            f"{uri} already has day(s) {', '.join(clash)}; appending "
            "them again would double their rows. Re-run with --overwrite-days "
            "(overwrite_days=True) to replace them, or choose other days."
        )
    return WritePlan(start=start, days=names, replaced=clash)


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

    Runs on the current Ray (the caller initialises it). :func:`plan_write` checks the table
    first, before any file is written. The tasks that generate the rows write them as Parquet
    files with page checksums (:mod:`dnr.data.delta_files`); the driver adds the files in one
    Delta commit (the first write creates the table). ``overwrite_days`` replaces the days that
    exist in that same one commit. If the commit or the run before it fails, the Parquet files
    that appeared in the written days' directories since the start and that the Delta log does
    not reference are deleted, so a failed run leaves the table's directory as it was (but for a
    file a task interrupted by Ctrl-C may still finish). Check and commit are not one
    transaction, and that clean-up would take another writer's uncommitted files of the same
    days: two generators must not write the same table at once. ``requests_per_block`` is
    the Ray block (≈ Parquet file) size, ``batch_size`` the requests per :func:`make_requests`
    call (30-100 KB of memory each).
    """
    import ray

    if requests_per_day < 1:
        raise ValueError(f"requests_per_day={requests_per_day} must be >= 1")
    plan = plan_write(lake, start=start, days=days, overwrite_days=overwrite_days)
    before = _day_files(lake, plan.days)
    try:
        total = days * requests_per_day
        dataset = ray.data.range(total, override_num_blocks=-(-total // requests_per_block)).map_batches(
            _generate_batch,
            batch_size=batch_size,
            batch_format="numpy",
            fn_kwargs={"config": config, "start": plan.start, "requests_per_day": requests_per_day},
        )
        files = dataset.map_batches(_write_block, batch_format="pyarrow", batch_size=None,
                                    fn_kwargs={"lake_root": lake.root})
        written = [row for block in files.iter_batches(batch_size=None, batch_format="pyarrow")
                   for row in block.to_pylist()]  # one row per file written, never a request
        delta_files.commit_files(lake, "request_logs", RL, written, partition_by=PARTITION_COLUMN,
                                 mode="overwrite" if plan.replaced else "append",
                                 replace_partitions=list(plan.days) if plan.replaced else None,
                                 metadata={"written_by": "dnr.data.synth"})
    except BaseException:  # Ctrl-C too: nothing of a failed run may stay in the table's directory
        _remove_uncommitted(lake, plan.days, before)
        raise
    return _summarise(lake.table_uri("request_logs"), lake.storage_options(), list(plan.days), plan.replaced)


def _day_files(lake: Lake, days: tuple[str, ...]) -> set[str]:
    """Paths (relative to the table, as the Delta log holds them) of the files in ``days``' directories."""
    from pyarrow import fs as pafs

    fs, base = lake.filesystem(), lake.fs_path(lake.table_uri("request_logs"))
    found = set()
    for day in days:
        selector = pafs.FileSelector(f"{base}/{PARTITION_COLUMN}={day}", allow_not_found=True)
        found |= {f"{PARTITION_COLUMN}={day}/{info.base_name}" for info in fs.get_file_info(selector)
                  if info.type == pafs.FileType.File}
    return found


def _remove_uncommitted(lake: Lake, days: tuple[str, ...], before: set[str]) -> None:
    """Delete the files of ``days`` that appeared since ``before`` and that no commit references
    (a commit that raised may still have landed: its files then stay)."""
    table = _open(lake)
    committed = set() if table is None else set(pa.table(table.get_add_actions(flatten=True))["path"].to_pylist())
    fs, base = lake.filesystem(), lake.fs_path(lake.table_uri("request_logs"))
    for path in sorted(_day_files(lake, days) - before - committed):
        fs.delete_file(f"{base}/{path}")


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


def _write_block(block: pa.Table, lake_root: str) -> pa.Table:
    """Ray ``map_batches`` function: a block of generated rows -> one checksummed Parquet file
    per day in ``request_logs``'s directory (committed by the driver)."""
    return delta_files.write_files(block.cast(RL.arrow), lake_root, "request_logs", PARTITION_COLUMN)


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
