"""Parquet files with page checksums, written by the tasks that hold the rows and added to a
Delta table in one commit from the driver.

Every data file of ``request_logs`` (from ``generate_logs`` and ``prepare_public``) and of
``quarantine`` that this project writes carries a CRC32 in the header of each data page (the
``crc`` field of parquet-format's ``PageHeader``). Neither delta-rs' writer (``write_deltalake``)
nor Ray Data's ``write_delta`` has an option for it, so the files are written with pyarrow's
writer here and committed with ``create_write_transaction``. Readers verify the checksums
(:func:`verified_scan_options`, used by :meth:`dnr.data.window.Window.read`): a page whose bytes
changed after it was written fails the read. Pages written without a checksum (by a platform
writer that does not write them) are read unverified.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dnr.schemas import TableSchema
from dnr.storage import Lake

#: pyarrow ``write_table`` options of every file written here (the small registry and
#: replay-report tables are still written by ``write_deltalake``, without checksums)
WRITE_OPTIONS = {"compression": "snappy", "write_page_checksum": True}

#: what a writing task sends back to the driver: one row per file it wrote
WRITTEN = pa.schema([("path", pa.string()), ("size", pa.int64()), ("rows", pa.int64()),
                     ("partition", pa.string())])


def verified_scan_options():
    """Scan options for ``ray.data.read_parquet(fragment_scan_options=...)``: Ray Data's own
    buffered-stream defaults, plus verification of every page checksum present."""
    import pyarrow.dataset as pds

    return pds.ParquetFragmentScanOptions(use_buffered_stream=True, buffer_size=8 << 20,
                                          page_checksum_verification=True)


def write_files(rows: pa.Table, lake_root: str, table: str, partition_by: str | None = None) -> pa.Table:
    """Write ``rows`` as new Parquet files in the directory of the lake's ``table``, one per value
    of ``partition_by`` (hive-style ``col=value/``, the column left out of the file); returns
    the :data:`WRITTEN` rows. The files are not part of the table until :func:`commit_files`."""
    lake = Lake(lake_root)
    fs, base = lake.filesystem(), lake.fs_path(lake.table_uri(table))
    if partition_by is None:
        groups = [(None, rows)]
    else:
        values = pc.unique(rows.column(partition_by)).to_pylist()
        groups = [(v, rows.filter(pc.equal(rows.column(partition_by), v)).drop_columns([partition_by]))
                  for v in sorted(values)]
    written = []
    for value, part in groups:
        directory = base if value is None else f"{base}/{partition_by}={value}"
        fs.create_dir(directory, recursive=True)
        name = f"part-{uuid.uuid4().hex}.snappy.parquet"
        pq.write_table(part, f"{directory}/{name}", filesystem=fs, **WRITE_OPTIONS)
        relative = name if value is None else f"{partition_by}={value}/{name}"
        written.append({"path": relative, "size": fs.get_file_info(f"{directory}/{name}").size,
                        "rows": part.num_rows, "partition": value})
    return pa.Table.from_pylist(written, schema=WRITTEN)


def commit_files(lake: Lake, table: str, schema: TableSchema, written: list[dict], *,
                 partition_by: str | None = None, mode: str = "append",
                 replace_partitions: list[str] | None = None, metadata: dict | None = None) -> None:
    """Add the :func:`write_files` rows ``written`` to ``table`` in one Delta commit, creating the
    table if it does not exist. ``mode="overwrite"`` replaces the whole table, or only the
    partitions ``replace_partitions`` when given (a re-landed day)."""
    from deltalake import CommitProperties, DeltaTable
    from deltalake.exceptions import TableNotFoundError
    from deltalake.transaction import AddAction, create_table_with_add_actions

    now_ms = int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)
    adds = [AddAction(path=w["path"], size=w["size"], modification_time=now_ms, data_change=True,
                      partition_values={partition_by: w["partition"]} if partition_by else {},
                      stats=json.dumps({"numRecords": w["rows"]}))
            for w in written]
    uri, options = lake.table_uri(table), lake.storage_options()
    props = CommitProperties(custom_metadata={"written_by": "dnr.data.delta_files", **(metadata or {})})
    partitions = [partition_by] if partition_by else None
    try:
        existing = DeltaTable(uri, storage_options=options)
    except TableNotFoundError:
        create_table_with_add_actions(uri, schema.delta, adds, mode="append", partition_by=partitions,
                                      storage_options=options, commit_properties=props)
        return
    have = pa.schema(existing.schema().to_arrow())
    if mode == "append" and have.names != schema.arrow.names:
        raise ValueError(f"{uri} has the columns {have.names}; the files to add have "
                         f"{schema.arrow.names}. Nothing was committed; migrate the table first.")
    filters = [(partition_by, "in", replace_partitions)] if replace_partitions else None
    existing.create_write_transaction(adds, mode=mode, schema=schema.delta, partition_by=partitions,
                                      partition_filters=filters, commit_properties=props)
