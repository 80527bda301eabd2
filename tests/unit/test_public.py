"""Public-data preparation: file formats, the causal split, labels, ds, determinism, the Delta write.

Every test makes its own tiny ratings data; no public dataset is read.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from dnr.datasets.interactions import InteractionFileError, detect_format, load_interactions
from dnr.datasets.public import (
    PublicDataConfig,
    build_request_logs,
    pooled_auc,
    rebase_to_days,
    write_request_logs,
)
from dnr.datasets.public_retriever import fit_platt
from dnr.schemas import REQUEST_LOGS
from dnr.storage import Lake

RL = REQUEST_LOGS.col
T0 = 1_000_000_000  # 2001-09-09
DAY = 86_400
CFG = PublicDataConfig(
    days=3, candidates=10, history_len=4, calibration_fraction=0.25, dim=8, epochs=2, batch_size=64
)
# the hand-made user: one earlier interaction, then a request at T whose future is known
HAND_USER, T = 999, T0 + 100 * DAY  # after the background users
ITEM_SEEN, ITEM_LIKED, ITEM_DISLIKED, ITEM_LATE = 0, 1, 2, 3


def _ratings() -> list[tuple[int, int, float, int]]:
    """(user, item, rating, timestamp) rows: 60 users with a few sessions each over ~100 days on a
    catalogue of 30 items, where low item ids are both popular and liked (so a retriever can learn
    something), then the hand-made user whose labels the tests know."""
    rng = np.random.default_rng(7)
    popularity = 1.0 / np.arange(1, 31)
    rows = []
    for user in range(1, 61):
        items = rng.choice(30, size=16, replace=False, p=popularity / popularity.sum())
        k = 0
        for day in np.sort(rng.choice(100, size=4, replace=False)):
            start = T0 + int(day) * DAY + int(rng.integers(0, DAY - 600))
            for j in range(rng.integers(2, 5)):
                item = int(items[k])
                rows.append((user, item, 5.0 if item < 8 else float(rng.integers(1, 4)), start + 60 * j))
                k += 1
    rows += [
        (HAND_USER, ITEM_SEEN, 5.0, T - 2 * DAY),
        (HAND_USER, ITEM_LIKED, 5.0, T),  # in the window, liked: label 1
        (HAND_USER, ITEM_DISLIKED, 2.0, T + 600),  # in the window, disliked: label 0
        (HAND_USER, ITEM_LATE, 5.0, T + 8 * DAY),  # liked after the 7-day window: label 0
    ]
    return rows


def _write(path: Path, fmt: str, rows) -> Path:
    if fmt == "movielens-dat":
        lines = [f"{u}::{i}::{r:g}::{t}" for u, i, r, t in rows]
    elif fmt == "movielens-csv":
        lines = ["userId,movieId,rating,timestamp"] + [f"{u},{i},{r},{t}" for u, i, r, t in rows]
    else:
        lines = ["user_id,item_id,rating,timestamp"] + [f"{u},{i},{r},{t}" for u, i, r, t in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def rows():
    return _ratings()


@pytest.fixture(scope="module")
def prepared(rows, tmp_path_factory):
    path = _write(tmp_path_factory.mktemp("ratings") / "ratings.csv", "movielens-csv", rows)
    return build_request_logs(load_interactions(path), CFG)


def _row_dicts(logs):
    return logs.table.to_pylist()


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize(
    "name, fmt", [("ratings.dat", "movielens-dat"), ("ratings.csv", "movielens-csv"), ("plays.csv", "csv")]
)
def test_reads_the_three_formats(tmp_path, rows, name, fmt):
    path = _write(tmp_path / name, fmt, rows)
    assert detect_format(path) == fmt
    data = load_interactions(path)
    assert data.fmt == fmt
    users, items, ratings, times = (np.array(c) for c in zip(*rows))
    np.testing.assert_array_equal(data.user, users)
    np.testing.assert_array_equal(data.item, items)
    np.testing.assert_array_equal(data.rating, ratings.astype(np.float32))
    np.testing.assert_array_equal(data.time, times)


def test_generic_csv_without_ratings_or_times(tmp_path):
    path = tmp_path / "clicks.csv"
    path.write_text("7,70\n8,80\n7,71\n")
    data = load_interactions(path)
    assert data.fmt == "csv" and data.rating is None
    np.testing.assert_array_equal(data.user, [7, 8, 7])
    np.testing.assert_array_equal(data.time, [0, 1, 2])  # the file order is the clock


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("ratings.dat", "1::10::5::100\n1::11::4::101\n2::12::oops::102\n", r"line 3, column 'rating'"),
        ("ratings.dat", "1::10::5::100\n1::11::4\n", r"line 2: 3 columns, expected 4"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,10,5,100\n1,x,4,101\n", r"line 3, column 'item'"),
        ("plays.csv", "user,item,rating\n1,10,5\n2,11,\n", r"line 3, column 'rating'"),
        ("plays.csv", "user,product\n1,10\n", r"line 1: column 'product'"),
    ],
)
def test_malformed_file_names_file_line_and_column(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InteractionFileError, match=expected) as err:
        load_interactions(path)
    assert str(path) in str(err.value)


# ---------------------------------------------------------------- the request logs


def test_schema_is_request_logs(prepared):
    table = prepared.table
    assert table.schema.equals(REQUEST_LOGS.arrow, check_metadata=True)
    assert table[RL.exposed].null_count == table[RL.true_click_prob].null_count == table.num_rows
    assert len(set(table[RL.request_id].to_pylist())) == table.num_rows
    for row in _row_dicts(prepared):
        n = len(row[RL.candidate_item_ids])
        assert 1 <= n <= CFG.candidates and len(row[RL.retriever_scores]) == len(row[RL.labels]) == n
        assert all(0.0 <= s <= 1.0 for s in row[RL.retriever_scores])
        assert row[RL.retriever_scores] == sorted(row[RL.retriever_scores], reverse=True)


def test_split_is_causal(prepared, rows):
    calibration_start = prepared.periods[0]
    first_seen = {}
    for _, item, _, t in sorted(rows, key=lambda r: r[3]):
        first_seen.setdefault(item, t)
    assert (prepared.source_time >= prepared.periods[1]).all()
    for row, t in zip(_row_dicts(prepared), prepared.source_time):
        mine = sorted((ts, item) for user, item, _, ts in rows if user == row[RL.user_id])
        before = [item for ts, item in mine if ts < t]
        assert row[RL.history_item_ids] == before[-CFG.history_len :]  # most recent, oldest first
        assert not set(row[RL.candidate_item_ids]) & set(before)  # nothing seen is a candidate
        # candidates come from the retriever's past: known before the calibration period began
        assert all(first_seen[item] < calibration_start for item in row[RL.candidate_item_ids])


def test_labels_follow_the_documented_rule(prepared, rows):
    window = CFG.label_window_days * DAY
    for row, t in zip(_row_dicts(prepared), prepared.source_time):
        liked = {i for u, i, r, ts in rows if u == row[RL.user_id] and t <= ts < t + window and r >= CFG.min_rating}
        assert row[RL.labels] == [int(c in liked) for c in row[RL.candidate_item_ids]]


def test_labels_on_a_hand_made_request(prepared):
    (row,) = [r for r, t in zip(_row_dicts(prepared), prepared.source_time) if r[RL.user_id] == HAND_USER and t == T]
    labels = dict(zip(row[RL.candidate_item_ids], row[RL.labels]))
    assert row[RL.history_item_ids] == [ITEM_SEEN] and ITEM_SEEN not in labels
    # the catalogue is smaller than the lists, so every unseen item the retriever knows is a candidate
    assert {ITEM_LIKED, ITEM_DISLIKED, ITEM_LATE} <= labels.keys()
    assert labels[ITEM_LIKED] == 1 and labels[ITEM_DISLIKED] == 0 and labels[ITEM_LATE] == 0
    assert sum(labels.values()) == 1


def test_ds_is_the_utc_date_of_event_time_and_spans_the_days(prepared):
    table = prepared.table
    times = table[RL.event_time].to_pylist()
    assert table[RL.ds].to_pylist() == [t.astimezone(dt.timezone.utc).date().isoformat() for t in times]
    assert len(set(table[RL.ds].to_pylist())) == CFG.days
    assert times == sorted(times)
    # rebasing keeps the real order of requests
    assert (np.diff(prepared.source_time) >= 0).all()


def test_rebase_to_days_makes_equal_count_days_in_order():
    time = np.array([5, 10, 20, 40, 41, 42, 900, 901, 902])
    event_time, ds = rebase_to_days(time, 3, dt.date(2024, 1, 30))
    assert ds.tolist() == ["2024-01-30"] * 3 + ["2024-01-31"] * 3 + ["2024-02-01"] * 3
    assert (np.diff(event_time.astype(np.int64)) > 0).all()
    assert np.datetime_as_string(event_time.astype("datetime64[D]")).tolist() == ds.tolist()


def test_same_seed_same_logs_other_seed_other_scores(rows, tmp_path, prepared):
    data = load_interactions(_write(tmp_path / "ratings.csv", "movielens-csv", rows))
    assert build_request_logs(data, CFG).table.equals(prepared.table)
    other = build_request_logs(data, PublicDataConfig(**{**CFG.__dict__, "seed": 1}))
    assert not other.table[RL.retriever_scores].equals(prepared.table[RL.retriever_scores])


def test_scores_are_platt_calibrated(prepared):
    assert prepared.calibration is not None and prepared.calibration[0] > 0


def test_platt_fit_recovers_a_known_calibration():
    rng = np.random.default_rng(0)
    raw = rng.normal(3.0, 2.0, 20_000)
    labels = (rng.random(raw.size) < 1 / (1 + np.exp(-(0.5 * raw - 4.0)))).astype(np.int8)
    a, b = fit_platt(raw, labels)
    assert a == pytest.approx(0.5, abs=0.05) and b == pytest.approx(-4.0, abs=0.2)
    assert fit_platt(raw, np.zeros_like(labels)) is None  # one class: nothing to calibrate on


def test_pooled_auc_counts_ties_as_half():
    assert pooled_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert pooled_auc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5


# ---------------------------------------------------------------- the lake


def test_written_table_is_partitioned_by_ds_and_refuses_to_clobber(prepared, local_lake):
    from deltalake import DeltaTable

    assert write_request_logs(prepared.table, local_lake) == 0
    dt_ = DeltaTable(local_lake.table_uri("request_logs"))
    assert dt_.metadata().partition_columns == [RL.ds]
    days = sorted(set(prepared.table[RL.ds].to_pylist()))
    assert sorted(p[RL.ds] for p in dt_.partitions()) == days
    back = pa.table(dt_.to_pyarrow_table()).sort_by(RL.event_time)
    assert back.num_rows == prepared.table.num_rows
    assert back.select(REQUEST_LOGS.names).cast(REQUEST_LOGS.arrow).equals(prepared.table)
    with pytest.raises(FileExistsError, match="--mode overwrite"):
        write_request_logs(prepared.table, local_lake)
    assert write_request_logs(prepared.table.slice(0, 5), local_lake, mode="overwrite") == 1
    assert DeltaTable(local_lake.table_uri("request_logs")).count() == 5


def test_job_prints_summary_and_next_command(rows, tmp_path, capsys):
    job_path = Path(__file__).resolve().parents[2] / "jobs" / "prepare_public.py"
    spec = importlib.util.spec_from_file_location("prepare_public", job_path)
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    ratings = _write(tmp_path / "ratings.dat", "movielens-dat", rows)
    lake = Lake(str(tmp_path / "lake"))
    argv = ["--ratings", str(ratings), "--lake", lake.root, "--days", "3", "--candidates", "10", "--epochs", "1"]
    assert job.main(argv) == 0
    out = capsys.readouterr().out
    assert "retriever: AUC" in out and "recall@10" in out and "requests per day:" in out
    assert lake.table_uri("request_logs") in out and "next: python jobs/train_daily.py" in out
    assert job.main(argv) == 2  # the table now holds rows
    assert "--mode overwrite" in capsys.readouterr().err
