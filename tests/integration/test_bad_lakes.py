"""Lakes as real platforms leave them: rows deleted by deltalake (files rewritten with
``string_view`` columns), files committed without a required column or with another type, and
days that landed empty. Read through :class:`dnr.data.window.Window` on the shared local Ray."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from dnr.config import DataConfig
from dnr.data.validate import SchemaError
from dnr.data.window import Window
from dnr.schemas import REQUEST_LOGS
from tests.factories import commit_file, make_rows, to_table, write_empty_day, write_logs

pytestmark = pytest.mark.integration
C = REQUEST_LOGS.col
CFG = DataConfig(max_list_len=8, num_buckets=1000, history_len=4)


def test_rows_deleted_by_deltalake_are_read_validated_and_streamed_in_the_contract_types(
        ray_cluster, local_lake):
    write_logs(local_lake, make_rows(12, "2026-03-01", seed=0))
    write_logs(local_lake, make_rows(12, "2026-03-02", seed=1))
    table = DeltaTable(local_lake.table_uri("request_logs"))
    table.delete(f"{C.request_id} = '2026-03-01-0-3' OR {C.request_id} = '2026-03-02-1-7'")
    rewritten = [pq.read_schema(f).field(C.request_id).type for f in table.file_uris()]
    assert pa.string_view() in rewritten  # what delta-rs writes a rewritten file with
    window = Window.open(local_lake, "2026-03-01", "2026-03-02")
    report = window.quarantine("run-delete", CFG)
    assert (report.rows_read, report.rows_quarantined) == (22, 0)
    kept = window.validated(CFG, report.duplicate_ids).take_all()
    assert len(kept) == 22 and "2026-03-01-0-3" not in {r[C.request_id] for r in kept}
    batch = window.validated(CFG, report.duplicate_ids).take_batch(100, batch_format="pyarrow")
    assert batch.schema.field(C.request_id).type == pa.string()
    assert batch.schema.field(C.candidate_item_ids).type == REQUEST_LOGS.arrow.field(C.candidate_item_ids).type


@pytest.mark.parametrize("first", [True, False], ids=["bad-file-first", "bad-file-last"])
def test_a_file_without_a_required_column_stops_the_scan_naming_the_column_and_the_file(
        ray_cluster, local_lake, first):
    bad = to_table(make_rows(6, "2026-03-01", seed=5)).drop_columns([C.ds, C.labels])
    good = lambda: write_logs(local_lake, make_rows(12, "2026-03-01", seed=0))  # noqa: E731
    if not first:
        good()
    commit_file(local_lake, bad, "2026-03-01")
    if first:
        good()
    window = Window.open(local_lake, "2026-03-01", "2026-03-01")
    with pytest.raises(SchemaError, match=r"missing required column 'labels'") as raised:
        window.quarantine("run-missing", CFG)
    assert "part-platform-" in str(raised.value) and "Nothing was trained" in str(raised.value)
    assert not Path(local_lake.root, "quarantine").exists()  # stopped before any row was judged


def test_a_file_with_a_mistyped_column_stops_the_scan_naming_the_column_its_type_and_the_file(
        ray_cluster, local_lake):
    write_logs(local_lake, make_rows(12, "2026-03-01", seed=0))
    rows = to_table(make_rows(6, "2026-03-01", seed=5)).drop_columns([C.ds])
    labels = pa.array([[str(v) for v in r] for r in rows.column(C.labels).to_pylist()], pa.list_(pa.string()))
    commit_file(local_lake, rows.set_column(rows.schema.get_field_index(C.labels), C.labels, labels), "2026-03-01")
    with pytest.raises(SchemaError, match=r"part-platform-.*column 'labels' has type list<.*string"):
        Window.open(local_lake, "2026-03-01", "2026-03-01").quarantine("run-typed", CFG)


def test_an_empty_day_is_a_window_with_no_requests_alone_or_beside_other_days(ray_cluster, local_lake):
    write_logs(local_lake, make_rows(12, "2026-03-01", seed=0))
    write_empty_day(local_lake, "2026-03-02")
    empty = Window.open(local_lake, "2026-03-02", "2026-03-02")
    assert empty.partitions == ("2026-03-02",) and empty.rows_read == 0
    report = empty.quarantine("run-empty", CFG)
    assert (report.rows_read, report.rows_kept, report.rows_quarantined, report.reasons) == (0, 0, 0, {})
    assert empty.validated(CFG, report.duplicate_ids).count() == 0
    both = Window.open(local_lake, "2026-03-01", "2026-03-02")
    report = both.quarantine("run-both", CFG)
    assert (report.rows_read, report.rows_kept) == (12, 12)
    assert both.validated(CFG, report.duplicate_ids).count() == 12
