"""The daily run and its replay on lakes as real platforms leave them: rows deleted by
deltalake, request ids of the training window seen again on the held-out day, days that landed
empty, and rows that land late in days already trained on (shared local Ray, a real lake)."""

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake

from dnr.config import load_config
from dnr.data.late import find_late_data
from dnr.datasets.synth import make_requests
from dnr.registry import Registry
from dnr.schemas import REQUEST_LOGS
from dnr.storage import Lake
from dnr.daily.run import run_daily
from tests.factories import write_empty_day
from tests.integration.test_train import DAY0, LENIENT_GATE, TINY, WORLD, add_days, ds

pytestmark = pytest.mark.integration
C = REQUEST_LOGS.col
ONE_WORKER = TINY + LENIENT_GATE + ["train.num_workers=1"]


def _reports(lake) -> list[dict]:
    table = DeltaTable(lake.table_uri("replay_reports"), storage_options=lake.storage_options())
    return sorted(table.to_pyarrow_table().to_pylist(), key=lambda r: r["created_at"])


def _append(lake, table: pa.Table) -> None:
    write_deltalake(lake.table_uri("request_logs"), table, partition_by=[C.ds], mode="append",
                    storage_options=lake.storage_options())


def _delete(lake, ids: list[str]) -> None:
    listed = ", ".join(f"'{i}'" for i in ids)
    DeltaTable(lake.table_uri("request_logs"), storage_options=lake.storage_options()).delete(
        f"{C.request_id} IN ({listed})")


def _moved(table: pa.Table, days: int) -> pa.Table:
    """The same requests, logged ``days`` later (same request ids)."""
    shifted = pc.add(table.column(C.event_time), pa.scalar(dt.timedelta(days=days), pa.duration("us")))
    day = (dt.date.fromisoformat(table.column(C.ds)[0].as_py()) + dt.timedelta(days=days)).isoformat()
    table = table.set_column(table.schema.get_field_index(C.event_time), C.event_time, shifted)
    return table.set_column(table.schema.get_field_index(C.ds), C.ds, pa.array([day] * table.num_rows))


def test_a_lake_with_deleted_rows_trains_and_replays_and_ids_of_the_training_window_are_not_evaluated(
        ray_cluster, local_lake):
    add_days(local_lake, 0, 2)  # 256 requests a day
    day0 = make_requests(WORLD, DAY0, np.arange(256))
    _append(local_lake, _moved(day0.slice(0, 5), 1))  # 5 requests of day 0 logged again on day 1
    day1_ids = make_requests(WORLD, DAY0 + dt.timedelta(days=1), np.arange(3)).column(C.request_id).to_pylist()
    _delete(local_lake, day0.column(C.request_id).to_pylist()[250:] + day1_ids)  # 6 of day 0, 3 of day 1

    result = run_daily(local_lake, load_config(None, ONE_WORKER), ds=ds(1), verbose=False)
    assert result.status == "trained" and result.rows_read == 250 and result.rows_quarantined == 0
    report, = _reports(local_lake)
    assert report["ds"] == ds(1) and report["rows_quarantined"] == 0
    assert json.loads(report["metrics_json"])["requests_excluded"] == 5  # the ids trained on day 0
    assert report["requests_evaluated"] == 256 + 5 - 3 - 5
    with open(result.replay_report_uri + "/report.md") as f:
        assert "- requests excluded (id in the training window): 5" in f.read()


def test_an_empty_day_is_replayed_as_no_requests_and_rejected_and_a_window_of_it_trains_nothing(
        ray_cluster, local_lake, tmp_path):
    add_days(local_lake, 0, 1)
    write_empty_day(local_lake, ds(1))
    first = run_daily(local_lake, load_config(None, ONE_WORKER), verbose=False)  # newest day: the empty one
    assert first.status == "trained" and first.window == (ds(0), ds(0))
    assert first.replay_decision == "reject" and first.registry_action == "rejected"
    report, = _reports(local_lake)
    assert (report["requests_evaluated"], report["rows_quarantined"], report["decision"]) == (0, 0, "reject")
    assert any(r.startswith("FAIL requests: 0 requests") for r in json.loads(report["reasons"]))
    with open(first.replay_report_uri + "/report.md") as f:
        assert "no requests: the day landed empty" in f.read()

    other = Lake(str(tmp_path / "empty-first"))
    write_empty_day(other, ds(0))
    add_days(other, 1, 1)
    second = run_daily(other, load_config(None, ONE_WORKER), verbose=False)  # window: the empty day
    assert second.status == "no_requests" and second.window == (ds(0), ds(0)) and second.rows_read == 0
    assert Registry(other).versions() == [] and second.version is None and second.replay_decision is None


def test_rows_landing_late_in_a_trained_day_are_trained_once_by_the_next_run_and_a_rewritten_day_is_reported(
        ray_cluster, local_lake):
    add_days(local_lake, 0, 4)
    first = run_daily(local_lake, load_config(None, ONE_WORKER), ds=ds(2), verbose=False)
    assert first.window == (ds(0), ds(1)) and first.rows_late == 0
    late = make_requests(WORLD, DAY0, np.arange(10_000, 10_040))  # 40 more requests of day 0
    _append(local_lake, late)
    day1_ids = make_requests(WORLD, DAY0 + dt.timedelta(days=1), np.arange(2)).column(C.request_id).to_pylist()
    _delete(local_lake, day1_ids)  # day 1 rewritten: its rows were trained already

    second = run_daily(local_lake, load_config(None, ONE_WORKER), ds=ds(3), verbose=False)
    assert second.status == "trained" and second.parent_version == first.version
    assert second.window == (ds(2), ds(2)) and second.rows_late == 40 and second.rows_read == 256 + 40
    assert f"40 late row(s) in 1 file(s) of already-trained day(s) {ds(0)}" in second.late_data
    assert f"day {ds(1)} was rewritten" in second.late_data and "254 rows added" in second.late_data
    row = Registry(local_lake).get(second.version)
    assert (row.rows_late, row.rows_read) == (40, 296) and Registry(local_lake).get(first.version).rows_late == 0
    # exactly once: from the second version's table version on, nothing is late any more
    now = DeltaTable(local_lake.table_uri("request_logs")).version()
    again = find_late_data(local_lake, row.table_version, row.window_end, now)
    assert again.files == () and again.rewritten == {}
