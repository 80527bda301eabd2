"""Days of the synthetic world (:func:`dnr.datasets.synth.make_requests`) written into a lake's
``request_logs`` Delta table by Ray Data tasks, one commit per run (:func:`write_request_logs`).

The table's schema is checked before any file is written (:func:`plan_write`): a table whose
columns were changed by the platform is refused with the columns named, and a run that fails
after writing removes the files it left uncommitted.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from dnr.data import delta_files
from dnr.datasets.synth import make_requests
from dnr.datasets.synth_world import WorldConfig
from dnr.schemas import PARTITION_COLUMN
from dnr.schemas import REQUEST_LOGS as RL
from dnr.storage import Lake


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
                                 metadata={"written_by": "dnr.datasets.synth"})
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
