"""generate_logs on a real local Ray and real Delta tables, local and on the local S3 server:
partitioned table with the exact schema, day-by-day appends, refusal to double a day, and
predicate overwrite of existing days; a table whose schema evolved is refused before any file is
written, and a failed commit leaves no file behind."""

from __future__ import annotations

import datetime as dt
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable, Field, write_deltalake

from dnr.data import delta_files
from dnr.datasets import synth_lake
from dnr.datasets.synth import make_requests
from dnr.datasets.synth_lake import DaysExistError, write_request_logs
from dnr.datasets.synth_world import WorldConfig
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


def _land_without_ray(lake: Lake, day: dt.date) -> None:
    """One day of ``request_logs`` as generate_logs writes it, without a Ray."""
    rows = make_requests(WORLD, day, np.arange(20))
    written = delta_files.write_files(rows, lake.root, "request_logs", PARTITION_COLUMN).to_pylist()
    delta_files.commit_files(lake, "request_logs", RL, written, partition_by=PARTITION_COLUMN)


def _stray_files(lake: Lake) -> list[str]:
    """Parquet files in the table's directory that its Delta log does not reference."""
    from pyarrow import fs as pafs

    base = lake.fs_path(lake.table_uri("request_logs"))
    stored = lake.filesystem().get_file_info(pafs.FileSelector(base, recursive=True))
    on_disk = {info.path for info in stored if info.path.endswith(".parquet") and "_delta_log" not in info.path}
    return sorted(on_disk - {lake.fs_path(uri) for uri in _table(lake).file_uris()})


def _evolve(lake: Lake, how: str) -> str:
    """Change the table's schema as the platform might; returns the column that differs."""
    table = _table(lake)
    if how == "column added":
        table.alter.add_columns(Field("platform_flag", "string", nullable=True))
        return "platform_flag"
    rows = lake.read_table("request_logs")  # a type changed: the table rewritten with user_id as text
    rows = rows.set_column(rows.schema.get_field_index(RL.col.user_id), RL.col.user_id,
                           rows[RL.col.user_id].cast(pa.string()))
    write_deltalake(table, rows, mode="overwrite", schema_mode="overwrite", partition_by=[PARTITION_COLUMN])
    _table(lake).vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)  # the old files
    return RL.col.user_id


@pytest.mark.parametrize("how", ["column added", "type changed"])
def test_a_table_whose_schema_evolved_is_refused_before_any_file_is_written(local_lake, how):
    _land_without_ray(local_lake, START)
    column = _evolve(local_lake, how)
    version = _table(local_lake).version()

    job = subprocess.run([sys.executable, str(JOB), "--lake", local_lake.root, "--days", "1",
                          "--requests-per-day", "50", "--users", "1000", "--items", "5000"],
                         capture_output=True, text=True, timeout=300, check=False)
    assert job.returncode == 1 and "Traceback" not in job.stderr, job.stderr[-3000:]
    message = job.stderr.strip()
    assert len(message.splitlines()) == 1 and message.startswith("generate_logs: "), message
    assert column in message and "Nothing was written" in message, message
    assert _table(local_lake).version() == version and _stray_files(local_lake) == []
    with pytest.raises(synth_lake.SchemaMismatchError, match=column):  # the library refuses as early
        synth_lake.plan_write(local_lake, days=1)


def test_a_commit_that_fails_after_the_files_were_written_leaves_none_behind(ray_cluster, lake, monkeypatch):
    write_request_logs(lake, WORLD, start=START, days=1, requests_per_day=ROWS)
    version = _table(lake).version()

    def commit_fails(*args, **kwargs):
        raise OSError("the object store went away")

    monkeypatch.setattr(delta_files, "commit_files", commit_fails)
    with pytest.raises(OSError, match="went away"):
        write_request_logs(lake, WORLD, days=2, requests_per_day=ROWS, requests_per_block=128)
    assert _table(lake).version() == version and _stray_files(lake) == []
