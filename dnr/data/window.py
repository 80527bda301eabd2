"""Reading a training window of ``request_logs``: pinned version, pruned partitions, validated.

::

    window = Window.open(lake, "2026-01-01", "2026-01-03")     # pins the table version
    report = window.quarantine(run_id, data_cfg)               # id scan, then one validation pass
    kept = window.validated(data_cfg, report.duplicate_ids)    # the training stream

Only the files of the window's ``ds`` partitions are read (``DeltaTable.file_uris`` with a
``file_pruning_predicate``), at the version pinned when the window was opened, so a day that
lands while a job runs never leaks into it. Duplicated ``request_id`` values are found first,
by a distributed scan of the id column alone (:meth:`Window.duplicates`). The validation pass
then reads the full rows once: tasks write the bad rows, the driver checks the counts and makes
one quarantine commit (:mod:`dnr.data.scan`). The training stream re-applies the same checks per
batch (vectorised, cheap), so it may be re-iterated every epoch without writing anything.
The driver holds O(files + blocks + duplicates) of state, never O(requests).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from dnr.config import DataConfig
from dnr.data import delta_files, scan, validate
from dnr.schemas import REQUEST_LOGS
from dnr.storage import Lake

C = REQUEST_LOGS.col


def parse_ds(value: str, what: str = "ds") -> str:
    """Check a ``YYYY-MM-DD`` partition value; returns it unchanged."""
    try:
        dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what}={value!r} is not a YYYY-MM-DD date") from None
    if len(value) != 10:
        raise ValueError(f"{what}={value!r} is not a YYYY-MM-DD date")
    return value


def table_partitions(lake: Lake) -> tuple[int, list[str]]:
    """(current version, sorted ds partitions) of request_logs."""
    from deltalake import DeltaTable

    table = DeltaTable(lake.table_uri("request_logs"), storage_options=lake.storage_options())
    adds = pa.table(table.get_add_actions(flatten=True))
    values = adds.column(f"partition.{C.ds}").to_pylist() if adds.num_rows else []
    return table.version(), sorted(set(values))


@dataclass
class QuarantineReport:
    """Outcome of the validation pass over a window."""

    rows_read: int
    rows_quarantined: int
    reasons: dict[str, int]
    duplicate_ids: np.ndarray = field(repr=False)
    """hashes of duplicated request_ids (see :meth:`Window.duplicate_ids`)"""
    rows_holdout: int = 0
    """kept rows in the validation hold-out (``validation.fraction``): evaluated, not trained"""
    rows_excluded: int = 0
    """kept rows whose request_id is in ``exclude_ids`` (the replay: ids of the training window)"""

    @property
    def rows_kept(self) -> int:
        return self.rows_read - self.rows_quarantined

    @property
    def rows_train(self) -> int:
        """kept rows trained on: read = train + hold-out + quarantined"""
        return self.rows_kept - self.rows_holdout


@dataclass(frozen=True)
class Window:
    """A date range of ``request_logs`` pinned at one table version."""

    lake: Lake
    start: str
    end: str
    version: int
    files: tuple[str, ...]
    rows_read: int
    """rows of the window by the Delta statistics (what the scan checks it reads)"""
    partitions: tuple[str, ...]
    file_rows: tuple[int, ...] = ()
    """rows of each of ``files`` by the Delta statistics"""

    @classmethod
    def open(cls, lake: Lake, start: str, end: str, version: int | None = None,
             extra_files: tuple[str, ...] = ()) -> "Window":
        """The partitions ``start``..``end`` at ``version`` (default: the newest), and the
        ``extra_files`` of other days (late rows, :mod:`dnr.data.late`), read alike."""
        from deltalake import DeltaTable

        parse_ds(start, "start"), parse_ds(end, "end")
        if start > end:
            raise ValueError(f"empty window: start {start} is after end {end}")
        uri = lake.table_uri("request_logs")
        table = DeltaTable(uri, version=version, storage_options=lake.storage_options())
        validate.check_schema(pa.schema(table.schema().to_arrow()), where=uri)
        predicate = [(C.ds, ">=", start), (C.ds, "<=", end)]
        files = tuple(table.file_uris(file_pruning_predicate=predicate))
        adds = pa.table(table.get_add_actions(flatten=True))
        ds_values = np.asarray(adds.column(f"partition.{C.ds}").to_pylist(), dtype=object)
        in_window = (ds_values >= start) & (ds_values <= end) if len(ds_values) else np.zeros(0, bool)
        if not files:
            present = sorted(set(ds_values.tolist()))
            span = f"{present[0]}..{present[-1]}" if present else "no partitions"
            raise ValueError(f"no request_logs partitions in [{start}, {end}] at version "
                             f"{table.version()} of {uri} (the table has {span})")
        files += tuple(f for f in extra_files if f not in files)
        stats = dict(zip(adds.column("path").to_pylist(),
                         adds.column("num_records").to_numpy(zero_copy_only=False).astype(float)))
        num_records = np.array([stats.get(f.removeprefix(uri + "/"), np.nan) for f in files])
        if np.isnan(num_records).any():
            missing = [f for f, n in zip(files, num_records) if np.isnan(n)]
            raise RuntimeError(f"{uri}: no row-count statistics for {len(missing)} file(s), e.g. "
                               f"{missing[0]}; cannot check the rows read")
        return cls(lake=lake, start=start, end=end, version=table.version(), files=files,
                   rows_read=int(num_records.sum()), partitions=tuple(sorted(set(ds_values[in_window]))),
                   file_rows=tuple(int(n) for n in num_records))

    @property
    def table_uri(self) -> str:
        return self.lake.table_uri("request_logs")

    def read(self, columns: list[str] | None = None, include_paths: bool = False):
        """The raw rows of the window as a Ray Dataset (``ds`` parsed from the partition path).

        ``include_paths`` adds a ``path`` column naming the file each row came from.
        """
        import ray.data

        with _file_list_reader():
            ds = ray.data.read_parquet(
                [self.lake.fs_path(f) for f in self.files],
                filesystem=self.lake.filesystem(),
                include_paths=include_paths,
                fragment_scan_options=delta_files.verified_scan_options(),  # page checksums, where written
                # one read task per file, fused with the map that follows (a Delta day is many
                # files; splitting a small window's blocks further only schedules more tasks)
                override_num_blocks=max(1, len(self.files)),
            )
        # projection is pushed down into the Parquet read by Ray Data's optimizer
        return ds.select_columns(columns) if columns else ds

    def duplicates(self, partitions: int | None = None):
        """A Dataset with one row per request_id that occurs more than once in the window:
        its 64-bit hash ``h`` and its number of ``copies``.

        Distributed: each read task hashes its block's ids (the id column alone is read) and
        assigns each hash to one of ``partitions`` buckets; a hash shuffle brings every bucket's
        hashes to one task, which keeps the repeated ones. The driver receives only those rows:
        no per-request state (the old driver-side count held 8 bytes per request, ~0.8 GB per
        10^8). A 64-bit collision between two distinct ids (probability ~n^2/2^65, about 3e-4 at
        10^8 requests) quarantines both rows as duplicates: safe, and visible.
        """
        partitions = partitions or dedup_partitions(self.rows_read)
        hashed = self.read(columns=[C.request_id]).map_batches(
            _hash_ids, batch_format="pyarrow", fn_kwargs={"partitions": partitions})
        return hashed.groupby("bucket", num_partitions=partitions).map_groups(
            _repeated, batch_format="numpy")

    def duplicate_ids(self, partitions: int | None = None) -> np.ndarray:
        """The hashes of :meth:`duplicates`, sorted (what validation tests membership in)."""
        if self.rows_read == 0:  # a day that landed empty: nothing to shuffle (and no column to key)
            return np.zeros(0, np.uint64)
        parts = [b["h"] for b in self.duplicates(partitions).iter_batches(
            batch_size=None, batch_format="numpy")]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.uint64)

    def shared_ids(self, other: "Window", partitions: int | None = None) -> np.ndarray:
        """The sorted hashes of the request_ids found in both this window and ``other`` (the
        replay: the held-out day against the candidate's training window).

        Distributed like :meth:`duplicates`: each read task hashes the id column of its block and
        tags it with its window; a hash shuffle brings each bucket to one task, which keeps the
        hashes seen in both. The driver receives only those.
        """
        if self.rows_read == 0 or other.rows_read == 0:
            return np.zeros(0, np.uint64)
        partitions = partitions or dedup_partitions(self.rows_read + other.rows_read)
        with self._naming_unreadable_files(), other._naming_unreadable_files():
            hashed = [w.read(columns=[C.request_id]).map_batches(
                _hash_ids, batch_format="pyarrow", fn_kwargs={"partitions": partitions, "tag": tag})
                for tag, w in enumerate((self, other))]
            both = hashed[0].union(hashed[1]).groupby("bucket", num_partitions=partitions).map_groups(
                _in_both, batch_format="numpy")
            parts = [b["h"] for b in both.iter_batches(batch_size=None, batch_format="numpy")]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.uint64)

    def quarantine(self, run_id: str, cfg: DataConfig, holdout_fraction: float = 0.0,
                   exclude_ids: np.ndarray | None = None) -> QuarantineReport:
        """Validate every row; append the bad ones to ``quarantine``; count by reason.

        Two Ray Data executions: the duplicate scan (the id column alone), then one pass over the
        full rows in which each task validates its block and writes its bad rows
        (:mod:`dnr.data.scan`); the driver gathers one summary per block, checks the rows read
        from every file against the Delta statistics (:class:`~dnr.data.scan.CountMismatchError`
        names the files that differ) and commits the staged files to ``quarantine`` at once.
        A row with several problems counts once in ``rows_quarantined`` and once under each of
        its reasons in ``reasons``. The same pass counts the kept rows of the validation
        hold-out (``holdout_fraction``, :func:`~dnr.data.validate.holdout_mask`), and those whose
        id hash is in ``exclude_ids`` (``rows_excluded``).
        """
        scan.check_file_schemas(self.lake, self.files, f"{self.table_uri} at version {self.version}")
        with self._naming_unreadable_files():
            return self._quarantine(run_id, cfg, holdout_fraction, exclude_ids)

    def _quarantine(self, run_id: str, cfg: DataConfig, holdout_fraction: float,
                    exclude_ids: np.ndarray | None) -> QuarantineReport:
        if self.rows_read == 0:  # only empty files: a window with no requests, read = kept = 0
            return QuarantineReport(rows_read=0, rows_quarantined=0, reasons={},
                                    duplicate_ids=np.zeros(0, np.uint64))
        duplicate_ids = self.duplicate_ids()
        summaries = self.read(include_paths=True).map_batches(
            scan.scan_block, batch_format="pyarrow", batch_size=None,
            fn_kwargs=dict(lake_root=self.lake.root, max_list_len=cfg.max_list_len,
                           duplicate_ids=duplicate_ids, source_table=self.table_uri,
                           source_version=self.version, run_id=run_id,
                           holdout_fraction=holdout_fraction, exclude_ids=exclude_ids))
        totals = scan.ScanTotals()
        for summary in summaries.iter_batches(batch_size=None, batch_format="pyarrow"):
            totals.add(summary)
        totals.check(dict(zip((self.lake.fs_path(f) for f in self.files), self.file_rows)),
                     self.table_uri, self.version)
        if totals.staged:
            scan.commit_quarantine(self.lake, totals.staged, run_id)
        return QuarantineReport(rows_read=totals.rows_read, rows_quarantined=totals.bad,
                                reasons=dict(totals.reasons), duplicate_ids=duplicate_ids,
                                rows_holdout=totals.holdout, rows_excluded=totals.excluded)

    @contextlib.contextmanager
    def _naming_unreadable_files(self):
        """A read that fails (Arrow names no file: "Parquet magic bytes not found in footer",
        "CRC checksum verification failed") is re-raised as
        :class:`~dnr.data.scan.UnreadableFileError` naming every file of the window that cannot
        be read (:func:`~dnr.data.scan.unreadable_files`)."""
        try:
            yield
        except (scan.CountMismatchError, validate.SchemaError, scan.UnreadableFileError):
            raise
        except Exception as error:  # noqa: BLE001 - re-raised, with the files named when found
            broken = scan.unreadable_files(self.lake, self.files)
            if not broken:
                raise
            listed = "; ".join(f"{path}: {reason}" for path, reason in broken[:5])
            raise scan.UnreadableFileError(
                f"{self.table_uri} at version {self.version}: {len(broken)} data file(s) of the "
                f"window cannot be read ({listed}). Restore them from the platform's copy or "
                "re-land their days, then re-run. Nothing was trained.") from error

    def validated(self, cfg: DataConfig, duplicate_ids: np.ndarray | None = None,
                  holdout_fraction: float = 0.0, part: str = "train", exclude_ids: np.ndarray | None = None):
        """The window's valid rows, streaming, in the contract schema (what training consumes):
        ``part="train"`` the rows outside the validation hold-out, ``"holdout"`` the rows in it;
        rows whose id hash is in ``exclude_ids`` left out."""
        if part not in ("train", "holdout"):
            raise ValueError(f"part={part!r}: one of 'train', 'holdout'")
        return self.read().map_batches(
            _keep_batch, batch_format="pyarrow",
            fn_kwargs=dict(max_list_len=cfg.max_list_len, duplicate_ids=duplicate_ids,
                           holdout_fraction=holdout_fraction, holdout=part == "holdout",
                           exclude_ids=exclude_ids),
        )


@contextlib.contextmanager
def _file_list_reader():
    """Plan the read with Ray Data's file-list Parquet reader (``use_datasource_v2 = False``)
    instead of 2.60's default DataSourceV2 one, for the datasets made inside it only.

    The window's files come from the Delta log, so nothing needs listing. Yet V2 runs a
    ``ListFiles`` task before every read, seconds of waiting per execution: ``python
    bench/ingest.py`` measured 4.92 s against 0.42 s with this reader (one 20,000-request day,
    warm workers, 2-core VM; bench/README.md "Ingest"). One read task per file (``read``) also
    lets Ray fuse the read with the ``map_batches`` after it. A daily run executes at least six
    reads (duplicates, validation, each worker's stream and hold-out, the replay's two).
    """
    from ray.data import DataContext

    context = DataContext.get_current()
    saved, context.use_datasource_v2 = context.use_datasource_v2, False
    try:
        yield
    finally:
        context.use_datasource_v2 = saved


def _keep_batch(batch: pa.Table, max_list_len: int, duplicate_ids: np.ndarray | None,
                holdout_fraction: float = 0.0, holdout: bool = False,
                exclude_ids: np.ndarray | None = None) -> pa.Table:
    if batch.num_rows == 0:  # an empty file's block may carry no column at all
        return REQUEST_LOGS.empty_table()
    batch = scan.contract_columns(batch)
    kept, _, _ = validate.split(batch, max_list_len, duplicate_ids)
    if holdout_fraction > 0.0 or holdout:
        held = validate.holdout_mask(kept.column(C.request_id), holdout_fraction)
        kept = kept.filter(pa.array(held if holdout else ~held))
    if exclude_ids is not None and len(exclude_ids):
        kept = kept.filter(pa.array(~np.isin(validate.hash_request_ids(kept.column(C.request_id)), exclude_ids)))
    schema = pa.schema([REQUEST_LOGS.arrow.field(n) for n in kept.column_names])
    return kept.cast(schema)


def dedup_partitions(rows: int, per_partition: int = 2_000_000) -> int:
    """Buckets of the duplicate scan: about 2M hashes (16 MB) per task, 1 to 512."""
    return int(min(512, max(1, -(-rows // per_partition))))


def _hash_ids(batch: pa.Table, partitions: int, tag: int | None = None) -> pa.Table:
    h = validate.hash_request_ids(validate.conform(batch).column(C.request_id))
    columns = {"h": h, "bucket": (h % np.uint64(partitions)).astype(np.int64)}
    if tag is not None:
        columns["tag"] = np.full(len(h), tag, np.int8)
    return pa.table(columns)


def _in_both(group: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    first, second = (np.unique(group["h"][group["tag"] == t]) for t in (0, 1))
    return {"h": np.intersect1d(first, second, assume_unique=True)}


def _repeated(group: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    values, counts = np.unique(group["h"], return_counts=True)
    repeated = counts > 1
    return {"h": values[repeated], "copies": counts[repeated].astype(np.int64)}
