"""generate_logs on a real local Ray and real Delta tables, local and on the local S3 server:
partitioned table with the exact schema, day-by-day appends, refusal to double a day, and
predicate overwrite of existing days."""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from dnr.data.synth import DaysExistError, make_requests, write_request_logs
from dnr.data.synth_world import WorldConfig
from dnr.schemas import PARTITION_COLUMN
from dnr.schemas import REQUEST_LOGS as RL
from dnr.storage import Lake

pytestmark = pytest.mark.integration

START = dt.date(2024, 5, 1)
WORLD = WorldConfig(seed=11, num_users=5_000, num_items=20_000)
ROWS = 150
JOB = Path(__file__).resolve().parents[2] / "jobs" / "generate_logs.py"


def _table(lake: Lake) -> DeltaTable:
    return DeltaTable(lake.table_uri("request_logs"), storage_options=lake.storage_options())


def _day(lake: Lake, day: str) -> pa.Table:
    rows = _table(lake).to_pyarrow_table(filters=[(PARTITION_COLUMN, "=", day)])
    return rows.select(RL.arrow.names).sort_by(RL.col.request_id)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def lake(request) -> Lake:
    return request.getfixturevalue(f"{request.param}_lake")


def test_days_are_appended_once_and_replaced_only_on_request(ray_cluster, lake):
    # 1. the first write creates a partitioned table with exactly the request_logs schema
    # 128-request blocks: several write tasks, one of them spanning the day boundary
    summary = write_request_logs(lake, WORLD, start=START, days=2, requests_per_day=ROWS, requests_per_block=128)
    table = _table(lake)
    assert pa.schema(table.schema().to_arrow()).equals(RL.arrow, check_metadata=True)
    assert table.metadata().partition_columns == [PARTITION_COLUMN]
    assert summary.rows_per_day == {"2024-05-01": ROWS, "2024-05-02": ROWS}
    assert summary.version == table.version() and not summary.overwritten_days
    expected = make_requests(WORLD, START, np.arange(ROWS)).sort_by(RL.col.request_id)
    assert _day(lake, "2024-05-01").equals(expected)  # same rows as the pure-numpy core

    # 2. with no start day, the next run appends the day after the last one: a new partition
    summary = write_request_logs(lake, WORLD, days=1, requests_per_day=ROWS)
    assert summary.rows_per_day == {"2024-05-03": ROWS}
    days = sorted(p[PARTITION_COLUMN] for p in _table(lake).partitions())
    assert days == ["2024-05-01", "2024-05-02", "2024-05-03"]

    # 3. appending a day that exists is refused and leaves the table untouched
    version = _table(lake).version()
    with pytest.raises(DaysExistError, match="2024-05-03.*--overwrite-days"):
        write_request_logs(lake, WORLD, start=dt.date(2024, 5, 3), days=2, requests_per_day=ROWS)
    assert _table(lake).version() == version

    # 4. --overwrite-days replaces the existing day and adds the new one in one commit
    summary = write_request_logs(
        lake, WORLD, start=dt.date(2024, 5, 3), days=2, requests_per_day=40, overwrite_days=True
    )
    assert summary.version == version + 1
    assert summary.overwritten_days == ("2024-05-03",)
    assert summary.rows_per_day == {"2024-05-03": 40, "2024-05-04": 40}
    table = _table(lake)
    assert pa.schema(table.schema().to_arrow()).equals(RL.arrow, check_metadata=True)
    assert table.to_pyarrow_table(columns=[RL.col.request_id]).num_rows == 2 * ROWS + 2 * 40
    replaced = _day(lake, "2024-05-03")
    expected = make_requests(WORLD, dt.date(2024, 5, 3), np.arange(40)).sort_by(RL.col.request_id)
    assert replaced.equals(expected)


def test_job_prints_summary_and_refuses_an_existing_day(ray_cluster, local_lake, capsys):
    spec = importlib.util.spec_from_file_location("generate_logs_job", JOB)
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    main = job.main

    args = ["--lake", local_lake.root, "--start", "2024-06-01", "--days", "2", "--requests-per-day", "60",
            "--users", "1000", "--items", "5000", "--seed", "3", "--shown-k", "6"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "ds=2024-06-01" in out and "ds=2024-06-02" in out and "table version 0" in out
    assert f"python jobs/train_daily.py --lake {local_lake.root}" in out
    exposed = _day(local_lake, "2024-06-02")[RL.col.exposed]
    assert exposed.null_count == 0  # --shown-k reaches the world

    with pytest.raises(SystemExit, match="already has day"):
        main(args)
