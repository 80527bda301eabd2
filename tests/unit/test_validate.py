"""Validation: every kind of bad row gets the right reason; counts add up; schema errors name the column."""

import json
import math

import numpy as np
import pyarrow as pa
import pytest

from dnr.data import validate
from dnr.schemas import QUARANTINE, REQUEST_LOGS
from tests.factories import make_rows, to_table

C = REQUEST_LOGS.col


def _corrupt(kind: str, rows: list[dict]) -> None:
    """Break rows[1] (and rows[2] for duplicates) in the way `kind` names."""
    row = rows[1]
    if kind == "null_required_field:user_id":
        row[C.user_id] = None
    elif kind == "null_required_field:candidate_item_ids":
        row[C.candidate_item_ids] = None
    elif kind == "length_mismatch":
        row[C.labels] = row[C.labels][:-1]
    elif kind == "empty_candidates":
        for c in (C.candidate_item_ids, C.retriever_scores, C.labels):
            row[c] = []
    elif kind == "list_too_long":
        for c in (C.candidate_item_ids, C.retriever_scores, C.labels):
            row[c] = row[c] * 3
    elif kind == "bad_score":
        row[C.retriever_scores][2] = math.nan
    elif kind == "bad_score_inf":
        row[C.retriever_scores][0] = math.inf
    elif kind == "bad_score_range":
        row[C.retriever_scores][0] = 1.5
    elif kind == "bad_score_null":
        row[C.retriever_scores][0] = None
    elif kind == "bad_label":
        row[C.labels][0] = 2
    elif kind == "bad_label_null":
        row[C.labels][0] = None
    elif kind == "ds_mismatch":
        row[C.ds] = "2025-12-31"
    elif kind == "duplicate_request_id":
        rows[2][C.request_id] = row[C.request_id]
    else:
        raise AssertionError(kind)


CASES = {
    "null_required_field:user_id": "null_required_field:user_id",
    "null_required_field:candidate_item_ids": "null_required_field:candidate_item_ids",
    "length_mismatch": "length_mismatch:labels",
    "empty_candidates": "empty_candidates",
    "list_too_long": "list_too_long",
    "bad_score": "bad_score",
    "bad_score_inf": "bad_score",
    "bad_score_range": "bad_score",
    "bad_score_null": "bad_score",
    "bad_label": "bad_label",
    "bad_label_null": "bad_label",
    "ds_mismatch": "ds_mismatch",
    "duplicate_request_id": "duplicate_request_id",
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_each_kind_of_bad_row_is_quarantined_with_its_reason(kind):
    rows = make_rows(6, list_len=5)
    _corrupt(kind, rows)
    table = to_table(rows)
    dups = (validate.hash_request_ids(pa.array([rows[1][C.request_id]]))
            if kind == "duplicate_request_id" else None)
    kept, bad, reasons = validate.split(table, max_list_len=10, duplicate_ids=dups)

    n_bad = 2 if kind == "duplicate_request_id" else 1
    assert kept.num_rows + bad.num_rows == table.num_rows  # nothing lost
    assert bad.num_rows == n_bad
    assert all(CASES[kind] in r.split(";") for r in reasons), reasons
    assert rows[0][C.request_id] in kept.column(C.request_id).to_pylist()

    q = validate.quarantine_rows(bad, reasons, "file:///lake/request_logs", 7, "run-1")
    assert q.schema.equals(QUARANTINE.arrow)
    assert q.column(QUARANTINE.col.source_version).to_pylist() == [7] * n_bad
    original = json.loads(q.column(QUARANTINE.col.row_json)[0].as_py())
    assert set(original) == set(REQUEST_LOGS.names)  # the whole row is kept


def test_valid_rows_have_no_reason_and_several_problems_are_all_named():
    rows = make_rows(4)
    rows[2][C.labels][0] = 5
    rows[2][C.retriever_scores][0] = -0.1
    bad, reasons = validate.row_reasons(to_table(rows), max_list_len=50)
    assert bad.tolist() == [False, False, True, False]
    assert reasons[0] is None
    assert set(reasons[2].split(";")) == {"bad_label", "bad_score"}


def test_nan_in_quarantine_json_is_strict_json():
    rows = make_rows(2)
    rows[0][C.retriever_scores][0] = math.nan
    _, bad, reasons = validate.split(to_table(rows), max_list_len=50)
    text = validate.quarantine_rows(bad, reasons, "t", 0, "r").column(QUARANTINE.col.row_json)[0].as_py()
    assert "NaN" not in text.replace('"nan"', "")
    assert json.loads(text)[C.retriever_scores][0] == "nan"


def test_missing_required_column_is_a_clear_error():
    schema = pa.schema([f for f in REQUEST_LOGS.arrow if f.name != C.retriever_scores])
    with pytest.raises(validate.SchemaError, match="missing required column 'retriever_scores'"):
        validate.check_schema(schema)


def test_mistyped_column_is_a_clear_error():
    schema = pa.schema([f.with_type(pa.list_(pa.float64())) if f.name == C.labels else f
                        for f in REQUEST_LOGS.arrow])
    with pytest.raises(validate.SchemaError, match="column 'labels' has type list<item: double>"):
        validate.check_schema(schema)


def test_optional_columns_may_be_absent_and_large_types_are_accepted():
    fields = [f for f in REQUEST_LOGS.arrow if f.name not in (C.exposed, C.true_click_prob)]
    fields = [f.with_type(pa.large_string()) if f.name == C.request_id else f for f in fields]
    validate.check_schema(pa.schema(fields))


def test_validation_is_vectorised_enough():
    # 20k rows x 50 candidates validate in well under a second: no per-row Python on the hot path
    import time

    rows = make_rows(200, list_len=50)
    table = pa.concat_tables([to_table(rows)] * 100)
    start = time.perf_counter()
    bad, _ = validate.row_reasons(table, max_list_len=50)
    elapsed = time.perf_counter() - start
    assert not bad.any()
    assert elapsed < 2.0, f"validation of 20k rows took {elapsed:.2f}s"
    assert np.asarray(bad).dtype == bool
