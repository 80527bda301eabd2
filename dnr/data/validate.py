"""Validation of request-log rows, vectorised over Arrow batches, and the quarantine format.

Two levels:

* :func:`check_schema` fails fast, before any training, when a required column is missing or
  has the wrong type; the error names the column, the expected and the found type.
* :func:`row_reasons` gives every row a reason string (``None`` when valid). A row with several
  problems gets them all, joined by ``;``. Bad rows go to the ``quarantine`` table with their
  reason, the source table and version, and the whole original row as JSON: nothing is dropped
  silently, and read = kept + quarantined.
"""

from __future__ import annotations

import datetime as _dt
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dnr.data.arrow_lists import flat_values, list_layout
from dnr.schemas import QUARANTINE, REQUEST_LOGS

C = REQUEST_LOGS.col
Q = QUARANTINE.col

#: Every reason a row can be quarantined for (the ``reason`` column holds these, ';'-joined).
REASONS = {
    "null_required_field": "a not-null column is null (the column is named after ':')",
    "length_mismatch": "a per-candidate list (named after ':') differs in length from candidate_item_ids",
    "empty_candidates": "candidate_item_ids has no element",
    "list_too_long": "more candidates than data.max_list_len",
    "bad_score": "a retriever score is null, NaN, infinite or outside [0, 1]",
    "bad_label": "a label is null or not 0/1",
    "ds_mismatch": "ds is not the UTC date of event_time",
    "duplicate_request_id": "the request_id occurs more than once in the window (all copies)",
}

#: per-candidate list columns that must have the candidates' length (when not null)
_PER_CANDIDATE = (C.retriever_scores, C.labels, C.exposed, C.true_click_prob)


class SchemaError(ValueError):
    """The table does not follow dnr/schema_files/request_logs.json."""


def plain_type(t: pa.DataType) -> pa.DataType:
    """The plain Arrow type of a physical variant a reader may hand back: ``string_view`` and
    ``large_string`` (delta-rs rewrites files with views after a ``DELETE``), ``large_list`` and
    list views, dictionary-encoded columns; nested alike. Other types are returned unchanged."""
    if pa.types.is_dictionary(t):
        return plain_type(t.value_type)
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t) \
            or pa.types.is_large_list_view(t):
        return pa.list_(t.value_field.with_type(plain_type(t.value_type)))
    return t


def _base_type(t: pa.DataType) -> pa.DataType:
    """What the contract compares: the plain type, without element nullability or time zone name."""
    t = plain_type(t)
    if pa.types.is_list(t):
        return pa.list_(_base_type(t.value_type))
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC" if t.tz else None)
    return t


def schema_problems(schema: pa.Schema, partition_columns: tuple[str, ...] = ()) -> list[str]:
    """Each missing required column and each column whose type is not the contract's; a data
    file holds no ``partition_columns`` (their values are in its path)."""
    problems = []
    for field in REQUEST_LOGS.arrow:
        if field.name not in schema.names:
            if not field.nullable and field.name not in partition_columns:
                problems.append(f"missing required column {field.name!r} ({field.type})")
            continue
        found = schema.field(field.name).type
        if _base_type(found) != _base_type(field.type):
            problems.append(f"column {field.name!r} has type {found}, expected {field.type}")
    return problems


def check_schema(schema: pa.Schema, where: str = "request_logs") -> None:
    """Raise :class:`SchemaError` naming each missing or mistyped contract column."""
    problems = schema_problems(schema)
    if problems:
        raise SchemaError(f"{where} does not match dnr/schema_files/request_logs.json: " + "; ".join(problems))


def conform(table: pa.Table) -> pa.Table:
    """The contract's columns of a read block, in its order, each cast from the physical variant it
    was read as to its plain type (:func:`plain_type`), before any compute kernel sees it: Arrow
    kernels such as ``coalesce`` have no ``string_view`` implementation."""
    names = [f.name for f in REQUEST_LOGS.arrow if f.name in table.column_names]
    table = table.select(names)
    target = pa.schema([table.schema.field(n).with_type(plain_type(table.schema.field(n).type)) for n in names])
    return table if target.equals(table.schema) else table.cast(target)


def _col(table: pa.Table, name: str) -> pa.Array | None:
    if name not in table.column_names:
        return None
    col = table.column(name)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _any_per_row(bad_flat: np.ndarray, arr: pa.Array, n: int) -> np.ndarray:
    _, rows, _ = list_layout(arr)
    return np.bincount(rows[bad_flat], minlength=n) > 0


def hash_request_ids(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """uint64 hash per request_id (nulls hash like the empty string); vectorised."""
    import pandas as pd

    if plain_type(ids.type) != ids.type:  # string_view from a file delta-rs rewrote
        ids = ids.cast(plain_type(ids.type))
    values = pc.fill_null(ids, "").to_numpy(zero_copy_only=False).astype(object)
    return pd.util.hash_array(values, categorize=False)


_HOLDOUT_MIX = np.uint64(0x9E3779B97F4A7C15)
"""Odd multiplier (2^64 / golden ratio) that decorrelates the hold-out draw from other uses of
the id hash (duplicate buckets, bootstrap weights)."""


def holdout_mask(ids: pa.Array | pa.ChunkedArray, fraction: float) -> np.ndarray:
    """[B] bool: the requests of the validation hold-out, a ``fraction`` of the ids chosen by
    their hash, so a request is held out on every worker count, run and day alike."""
    if fraction <= 0.0:
        return np.zeros(len(ids), bool)
    with np.errstate(over="ignore"):
        mixed = hash_request_ids(ids) * _HOLDOUT_MIX  # wraps modulo 2^64
    return (mixed >> np.uint64(11)).astype(np.float64) < fraction * 2.0**53


def row_reasons(table: pa.Table, max_list_len: int,
                duplicate_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(bad [B] bool, reason per row: object array of str, ``None`` for valid rows). Vectorised."""
    n = table.num_rows
    checks: list[tuple[str, np.ndarray]] = []

    for name in REQUEST_LOGS.required:
        col = _col(table, name)
        if col is not None and col.null_count:
            checks.append((f"null_required_field:{name}", col.is_null().to_numpy(zero_copy_only=False)))

    candidates = _col(table, C.candidate_item_ids)
    n_cand = pc.fill_null(pc.list_value_length(candidates), 0).to_numpy(zero_copy_only=False)
    for name in _PER_CANDIDATE:
        col = _col(table, name)
        if col is None:
            continue
        lengths = pc.list_value_length(col)
        # a null list is either a required-field problem (reported above) or allowed (nullable)
        present = lengths.is_valid().to_numpy(zero_copy_only=False)
        mismatch = present & (pc.fill_null(lengths, 0).to_numpy(zero_copy_only=False) != n_cand)
        checks.append((f"length_mismatch:{name}", mismatch))
    checks.append(("empty_candidates", candidates.is_valid().to_numpy(zero_copy_only=False) & (n_cand == 0)))
    checks.append(("list_too_long", n_cand > max_list_len))

    scores = flat_values(_col(table, C.retriever_scores), np.nan).astype(np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~((scores >= 0.0) & (scores <= 1.0))  # NaN compares False: caught here too
    checks.append(("bad_score", _any_per_row(bad, _col(table, C.retriever_scores), n)))

    labels = flat_values(_col(table, C.labels), -1)
    checks.append(("bad_label", _any_per_row((labels != 0) & (labels != 1), _col(table, C.labels), n)))

    day = pc.strftime(_col(table, C.event_time), format="%Y-%m-%d")
    ds_bad = pc.fill_null(pc.not_equal(day, _col(table, C.ds)), False)
    checks.append(("ds_mismatch", ds_bad.to_numpy(zero_copy_only=False)))

    if duplicate_ids is not None and len(duplicate_ids):
        dup = np.isin(hash_request_ids(_col(table, C.request_id)), duplicate_ids)
        checks.append(("duplicate_request_id", dup))

    any_bad = np.zeros(n, dtype=bool)
    reasons = np.full(n, None, dtype=object)
    for name, bad_rows in checks:
        any_bad |= bad_rows
        idx = np.flatnonzero(bad_rows)
        for i in idx:  # only bad rows, which are rare: not the hot path
            reasons[i] = name if reasons[i] is None else f"{reasons[i]};{name}"
    return any_bad, reasons


def _json_safe(value):
    """JSON without NaN/Infinity tokens (not valid JSON for strict readers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


def quarantine_rows(bad: pa.Table, reasons: np.ndarray, source_table: str, source_version: int,
                    run_id: str, now: _dt.datetime | None = None) -> pa.Table:
    """Bad rows in the quarantine table's schema, the original row kept whole as JSON."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    rows = bad.to_pylist()
    ids = _col(bad, C.request_id) if bad.num_rows else None
    ds = _col(bad, C.ds)
    return pa.table(
        {
            Q.request_id: ids if ids is not None else pa.array([], pa.string()),
            Q.reason: pa.array(list(reasons), pa.string()),
            Q.source_table: pa.array([source_table] * len(rows), pa.string()),
            Q.source_version: pa.array([source_version] * len(rows), pa.int64()),
            Q.ds: ds if ds is not None else pa.nulls(len(rows), pa.string()),
            Q.run_id: pa.array([run_id] * len(rows), pa.string()),
            Q.quarantined_at: pa.array([now] * len(rows), pa.timestamp("us", tz="UTC")),
            Q.row_json: pa.array([json.dumps(_json_safe_row(r), sort_keys=True) for r in rows], pa.string()),
        }
    ).cast(QUARANTINE.arrow)


def _json_safe_row(row: dict) -> dict:
    return {k: _json_safe(v) for k, v in row.items()}


def split(table: pa.Table, max_list_len: int, duplicate_ids: np.ndarray | None = None
          ) -> tuple[pa.Table, pa.Table, np.ndarray]:
    """(kept rows, bad rows, reasons of the bad rows)."""
    bad_mask, reasons = row_reasons(table, max_list_len, duplicate_ids)
    return table.filter(pa.array(~bad_mask)), table.filter(pa.array(bad_mask)), reasons[bad_mask]
