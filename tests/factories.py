"""Small hand-made request logs for tests (independent of the synthetic world)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from dnr.schemas import REQUEST_LOGS

C = REQUEST_LOGS.col


def make_rows(n: int, ds: str = "2026-01-01", list_len: int = 5, seed: int = 0,
              prefix: str | None = None, history_len: int = 3) -> list[dict]:
    """``n`` valid request-log rows of day ``ds`` as Python dicts (easy to corrupt one by one)."""
    rng = np.random.default_rng(seed)
    day = dt.datetime.fromisoformat(ds).replace(tzinfo=dt.timezone.utc)
    prefix = prefix or f"{ds}-{seed}"
    rows = []
    for i in range(n):
        scores = np.sort(rng.random(list_len).astype(np.float32))[::-1]
        rows.append({
            C.request_id: f"{prefix}-{i}",
            C.user_id: int(rng.integers(1, 1_000)),
            C.event_time: day + dt.timedelta(seconds=int(rng.integers(0, 86_400))),
            C.ds: ds,
            C.history_item_ids: [int(x) for x in rng.integers(1, 10**12, history_len)],
            C.candidate_item_ids: [int(x) for x in rng.integers(1, 10**12, list_len)],
            C.retriever_scores: [float(x) for x in scores],
            C.labels: [int(x) for x in (rng.random(list_len) < scores * 0.3)],
            C.exposed: None,
            C.true_click_prob: None,
        })
    return rows


def to_table(rows: list[dict], schema: pa.Schema | None = None) -> pa.Table:
    """Rows -> Arrow. Default schema: the contract with every field nullable, so that tests can
    write deliberately bad rows (nulls, NaN, bad labels) as a broken upstream writer would."""
    if schema is None:
        schema = pa.schema([f.with_nullable(True) for f in REQUEST_LOGS.arrow])
        schema = pa.schema([
            f.with_type(pa.list_(pa.field("element", f.type.value_type, nullable=True)))
            if pa.types.is_list(f.type) else f
            for f in schema
        ])
    return pa.Table.from_pylist(rows, schema=schema)


def write_logs(lake, rows: list[dict], mode: str = "append") -> None:
    from deltalake import write_deltalake

    write_deltalake(lake.table_uri("request_logs"), to_table(rows), partition_by=[C.ds],
                    mode=mode, storage_options=lake.storage_options())


def commit_file(lake, table: pa.Table, ds: str) -> None:
    """Add ``table`` (without ``ds``) as one file of day ``ds``, as a platform writer that checks
    nothing would: a file without a column, with another type, or with no row at all."""
    import pyarrow.parquet as pq

    from dnr.data import delta_files

    fs, base = lake.filesystem(), lake.fs_path(lake.table_uri("request_logs"))
    fs.create_dir(f"{base}/{C.ds}={ds}", recursive=True)
    name = f"{C.ds}={ds}/part-platform-{abs(hash((ds, table.num_rows, tuple(table.column_names))))}.parquet"
    pq.write_table(table, f"{base}/{name}", filesystem=fs)
    written = [{"path": name, "size": fs.get_file_info(f"{base}/{name}").size, "rows": table.num_rows,
                "partition": ds}]
    delta_files.commit_files(lake, "request_logs", REQUEST_LOGS, written, partition_by=C.ds)


def write_empty_day(lake, ds: str) -> None:
    """Day ``ds`` landed with no request: one committed file of zero rows."""
    commit_file(lake, to_table([]).drop_columns([C.ds]), ds)
