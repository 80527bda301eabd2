"""Window reads through Ray Data on real Delta tables, local and on the local S3 server."""

import math
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from dnr.config import DataConfig
from dnr.data.collate import collate
from dnr.data import validate
from dnr.data.scan import CountMismatchError, UnreadableFileError
from dnr.data.validate import SchemaError
from dnr.data.window import Window
from dnr.schemas import QUARANTINE, REQUEST_LOGS
from tests.factories import make_rows, to_table, write_logs

pytestmark = pytest.mark.integration
C = REQUEST_LOGS.col
Q = QUARANTINE.col
CFG = DataConfig(max_list_len=8, num_buckets=1000, history_len=4)


def _three_days(lake, n=12):
    for day, seed in (("2026-03-01", 0), ("2026-03-02", 1), ("2026-03-03", 2)):
        write_logs(lake, make_rows(n, day, seed=seed))  # one file per day and write


def test_window_reads_only_its_partitions_at_the_pinned_version(ray_cluster, local_lake):
    _three_days(local_lake)
    window = Window.open(local_lake, "2026-03-02", "2026-03-03")
    all_files = DeltaTable(local_lake.table_uri("request_logs")).file_uris()
    assert len(all_files) == 3 and len(window.files) == 2
    assert window.partitions == ("2026-03-02", "2026-03-03") and window.rows_read == 24

    # a day landing after the window was opened does not leak in: the version is pinned
    write_logs(local_lake, make_rows(5, "2026-03-02", seed=9))
    rows = window.read(include_paths=True).take_all()
    paths = {r["path"] for r in rows}
    assert len(rows) == 24 and len(paths) == 2
    assert all("ds=2026-03-02" in p or "ds=2026-03-03" in p for p in paths)
    assert {r[C.ds] for r in rows} == {"2026-03-02", "2026-03-03"}
    assert Window.open(local_lake, "2026-03-02", "2026-03-03").rows_read == 29


def test_a_window_read_is_one_fused_task_per_file_with_no_listing_and_leaves_ray_s_default_alone(
        ray_cluster, local_lake):
    """The files come from the Delta log: Ray Data's DataSourceV2 reader would first run a
    file-listing task first (4.92 s per pass against 0.42 s in ``bench/ingest.py``)."""
    from ray.data import DataContext

    _three_days(local_lake)
    window = Window.open(local_lake, "2026-03-01", "2026-03-03")
    default = DataContext.get_current().use_datasource_v2
    validated = window.validated(CFG)
    assert DataContext.get_current().use_datasource_v2 == default  # only this read is planned so
    materialized = validated.materialize()
    assert materialized.count() == 36
    stats = materialized.stats()
    assert "ListFiles" not in stats and "ReadFiles" not in stats, stats
    # the read fused with the validation map: one task per file of the window
    assert "ReadParquet->MapBatches(_keep_batch): 3 tasks executed" in stats, stats


def test_bad_rows_are_quarantined_and_counts_add_up(ray_cluster, local_lake):
    rows = make_rows(10, "2026-03-01") + make_rows(10, "2026-03-02", seed=1)
    rows[1][C.retriever_scores][0] = math.nan
    rows[2][C.labels] = rows[2][C.labels][:-1]
    rows[12][C.labels][0] = 7
    rows[13][C.request_id] = rows[3][C.request_id]  # duplicate across days: both copies go
    rows[14][C.candidate_item_ids] = list(range(1, 20))
    write_logs(local_lake, rows)

    window = Window.open(local_lake, "2026-03-01", "2026-03-02")
    report = window.quarantine("run-q", CFG)
    kept = window.validated(CFG, report.duplicate_ids)
    assert report.rows_read == 20 and report.rows_quarantined == 6
    assert kept.count() == report.rows_kept == 14
    assert report.reasons == {"bad_score": 1, "length_mismatch:labels": 2, "bad_label": 1,
                              "length_mismatch:retriever_scores": 1, "list_too_long": 1,
                              "duplicate_request_id": 2}

    q = DeltaTable(local_lake.table_uri("quarantine")).to_pyarrow_table()
    assert q.num_rows == 6 and set(q.column(Q.run_id).to_pylist()) == {"run-q"}
    assert set(q.column(Q.source_version).to_pylist()) == {window.version}
    # the kept stream has the contract's types and collates
    batch = collate(pa.Table.from_pylist(kept.take(5), schema=REQUEST_LOGS.arrow), CFG)
    assert batch.num_requests == 5


def test_missing_column_fails_before_reading(ray_cluster, local_lake):
    from deltalake import write_deltalake

    table = to_table(make_rows(3)).drop_columns([C.labels])
    write_deltalake(local_lake.table_uri("request_logs"), table, partition_by=[C.ds])
    with pytest.raises(SchemaError, match="missing required column 'labels'"):
        Window.open(local_lake, "2026-01-01", "2026-01-01")


def test_empty_window_names_what_exists(ray_cluster, local_lake):
    _three_days(local_lake, n=2)
    with pytest.raises(ValueError, match=r"no request_logs partitions in \[2026-04-01.*2026-03-01..2026-03-03"):
        Window.open(local_lake, "2026-04-01", "2026-04-02")


@pytest.mark.s3
def test_s3_round_trip_through_ray_data(ray_cluster, s3_lake):
    rows = make_rows(15, "2026-03-01") + make_rows(15, "2026-03-02", seed=1)
    rows[20][C.labels][0] = 9
    write_logs(s3_lake, rows)
    window = Window.open(s3_lake, "2026-03-02", "2026-03-02")
    assert window.files[0].startswith(s3_lake.root) and window.rows_read == 15
    report = window.quarantine("run-s3", CFG)
    assert report.rows_quarantined == 1 and report.reasons == {"bad_label": 1}
    assert window.validated(CFG, report.duplicate_ids).count() == 14
    q = DeltaTable(s3_lake.table_uri("quarantine"), storage_options=s3_lake.storage_options())
    assert q.to_pyarrow_table().column(Q.reason).to_pylist() == ["bad_label"]


def test_duplicates_are_found_by_a_shuffle_and_only_they_reach_the_driver(ray_cluster, local_lake):
    rows = make_rows(40, "2026-03-01") + make_rows(40, "2026-03-02", seed=1)
    for i, j in ((0, 1), (3, 50), (3, 51), (60, 79)):  # three ids repeated: 2, 3 and 2 copies
        rows[j][C.request_id] = rows[i][C.request_id]
    write_logs(local_lake, rows)
    window = Window.open(local_lake, "2026-03-01", "2026-03-02")

    # what the driver iterates: one row per repeated id, never the 80 requests
    found = window.duplicates(partitions=4).take_all()
    assert sorted(r["copies"] for r in found) == [2, 2, 3]
    expected = validate.hash_request_ids(pa.array([rows[i][C.request_id] for i in (0, 3, 60)]))
    assert sorted(int(r["h"]) for r in found) == sorted(expected.tolist())
    report = window.quarantine("run-d", CFG)  # one partition at this size (dedup_partitions)
    assert report.reasons == {"duplicate_request_id": 7} and report.rows_kept == 73


def test_a_file_changed_after_its_commit_fails_the_scan_naming_it(ray_cluster, local_lake):
    import pyarrow.parquet as pq

    write_logs(local_lake, make_rows(10, "2026-03-01"))
    write_logs(local_lake, make_rows(10, "2026-03-02", seed=1))
    window = Window.open(local_lake, "2026-03-01", "2026-03-02")
    victim = next(f for f in window.files if "ds=2026-03-02" in f)
    # a valid Parquet file with half the rows: the Delta statistics still say 10
    pq.write_table(pq.read_table(victim).slice(0, 5), victim)
    with pytest.raises(CountMismatchError, match=rf"{victim}: statistics 10 rows, read 5"):
        window.quarantine("run-c", CFG)
    quarantine_log = Path(local_lake.table_uri("quarantine"), "_delta_log")
    assert not any(quarantine_log.glob("*.json"))  # nothing was committed


def test_bytes_changed_inside_a_page_of_a_generated_file_are_caught_and_the_file_named(ray_cluster, local_lake):
    import datetime as dt

    import pyarrow.parquet as pq

    from dnr.datasets.synth_lake import write_request_logs
    from dnr.datasets.synth_world import WorldConfig

    write_request_logs(local_lake, WorldConfig(seed=3, num_users=500, num_items=2_000),
                       start=dt.date(2026, 3, 1), days=2, requests_per_day=200)
    window = Window.open(local_lake, "2026-03-01", "2026-03-02")
    victim = Path(window.files[0])
    meta = pq.read_metadata(victim)
    group = meta.row_group(0)
    chunk = next(group.column(i) for i in range(group.num_columns)
                 if group.column(i).path_in_schema.startswith(C.candidate_item_ids))
    data = bytearray(victim.read_bytes())
    middle = chunk.data_page_offset + chunk.total_compressed_size // 2
    data[middle:middle + 8] = bytes(b ^ 0x5A for b in data[middle:middle + 8])  # silent bit rot
    victim.write_bytes(bytes(data))
    assert pq.read_metadata(victim).num_rows == meta.num_rows  # the footer still reads
    with pytest.raises(UnreadableFileError, match=rf"1 data file\(s\) .*{victim}: .*CRC checksum"):
        window.quarantine("run-crc", CFG)


def test_a_truncated_file_is_named_when_the_scan_cannot_read_it(ray_cluster, local_lake):
    write_logs(local_lake, make_rows(10, "2026-03-01"))
    write_logs(local_lake, make_rows(10, "2026-03-02", seed=1))
    window = Window.open(local_lake, "2026-03-01", "2026-03-02")
    victim = Path(next(f for f in window.files if "ds=2026-03-01" in f))
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(UnreadableFileError, match=rf"1 data file\(s\) .*{victim}: .*footer"):
        window.quarantine("run-t", CFG)
