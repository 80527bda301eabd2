"""dnr/schema_files/*.json are the single source of truth: they load, round-trip through Delta, and
every column the code names exists."""

import json

import pyarrow as pa
import pytest

from dnr.schemas import ALL_TABLES, REQUEST_LOGS, SCHEMA_DIR


@pytest.mark.parametrize("table", ALL_TABLES, ids=lambda t: t.name)
def test_schema_json_round_trips_through_delta(table, tmp_path):
    from deltalake import DeltaTable, write_deltalake

    assert json.loads(table.delta.to_json()) == json.loads(json.dumps(table.delta_json))
    write_deltalake(str(tmp_path / table.name), table.empty_table())
    stored = pa.schema(DeltaTable(str(tmp_path / table.name)).schema().to_arrow())
    assert stored.equals(table.arrow), (stored, table.arrow)


def test_every_schema_file_is_a_table_and_has_docs():
    files = [p.name for p in SCHEMA_DIR.iterdir() if p.name.endswith(".json")]
    assert sorted(name.removesuffix(".json") for name in files) == sorted(t.name for t in ALL_TABLES)
    for table in ALL_TABLES:
        for field in table.delta_json["fields"]:
            assert field["metadata"].get("comment"), f"{table.name}.{field['name']} has no comment"


def test_unknown_column_name_fails_loudly():
    assert REQUEST_LOGS.col.retriever_scores == "retriever_scores"
    with pytest.raises(AttributeError, match="no column 'retriever_score'"):
        REQUEST_LOGS.col.retriever_score


def test_request_logs_matches_the_design():
    arrow = REQUEST_LOGS.arrow
    assert arrow.field("labels").type == pa.list_(pa.field("element", pa.int8(), nullable=False))
    assert arrow.field("event_time").type == pa.timestamp("us", tz="UTC")
    assert REQUEST_LOGS.required == ["request_id", "user_id", "event_time", "ds",
                                     "candidate_item_ids", "retriever_scores", "labels"]
