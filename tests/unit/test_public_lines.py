"""Implicit-feedback split files (``user item item ...``) to request logs: the reader, the split of
train, what each day kind may see, the days, and the job end to end.

Every test writes its own tiny split files; no public dataset is read.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from dnr.datasets import public_lines
from dnr.datasets.interactions import InteractionFileError, load_user_lines
from dnr.datasets.public_lines import LinesConfig, SplitData, build_lines_logs, split_train
from dnr.schemas import REQUEST_LOGS
from dnr.storage import Lake

RL = REQUEST_LOGS.col
CFG = LinesConfig(train_days=3, candidates=10, history_len=5, requests_per_user=2, dim=8, epochs=2, batch_size=64)
RESERVED = range(100, 106)  # items only ever in test files: the retriever cannot know them
EMPTY_TEST_USER = 7  # has train and valid items, an empty test line


def _split() -> dict[str, dict[int, list[int]]]:
    """40 users on 40 items where low ids are popular; each user's train, valid and test items are
    disjoint, and a few test items are RESERVED ones no other file holds."""
    rng = np.random.default_rng(3)
    popularity = 1.0 / np.arange(1, 41)
    out = {"train": {}, "valid": {}, "test": {}}
    for user in range(40):
        items = rng.choice(40, size=18, replace=False, p=popularity / popularity.sum()).tolist()
        out["train"][user], out["valid"][user], out["test"][user] = items[:10], items[10:13], items[13:]
        if user % 5 == 0:
            out["test"][user].append(RESERVED[user % len(RESERVED)])
    out["test"][EMPTY_TEST_USER] = []
    return out


def _write(folder: Path, split) -> dict[str, Path]:
    paths = {}
    for kind, rows in split.items():
        paths[kind] = folder / f"{kind}.txt"
        paths[kind].write_text("".join(f"{u} {' '.join(map(str, items))}\n" for u, items in rows.items()))
    return paths


@pytest.fixture(scope="module")
def split():
    return _split()


@pytest.fixture(scope="module")
def data(split, tmp_path_factory):
    paths = _write(tmp_path_factory.mktemp("split"), split)
    return SplitData.from_files({kind: load_user_lines(p) for kind, p in paths.items()})


@pytest.fixture(scope="module")
def prepared(data):
    return build_lines_logs(data, CFG)


def _rows(prep, kind: str) -> list[dict]:
    return [r for r, k in zip(prep.table.to_pylist(), prep.kind) if k == kind]


def _parts(prep) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """The retriever and label parts as {file user: [file items]}."""
    data = prep.data
    return tuple({int(data.user_ids[u]): data.item_ids[part.items[part.offsets[u]:part.offsets[u + 1]]].tolist()
                  for u in range(len(part))} for part in (prep.retriever_part, prep.label_part))


# ---------------------------------------------------------------- the reader


def test_split_file_round_trips(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("3 10 11 12\n\n0\n5\t7  9 \n")
    lines = load_user_lines(path)
    assert lines.user.tolist() == [3, 0, 5] and len(lines) == 5
    assert lines.items.offsets.tolist() == [0, 3, 3, 5] and lines.items.items.tolist() == [10, 11, 12, 7, 9]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1 2 3\n2 4 x5\n", r"line 2: 'x5' is not a non-negative integer id"),
        ("1 2\n\n3 -4\n", r"line 3: '-4' is a negative id"),
        ("-1 2\n", r"line 1: '-1' is a negative id"),
        ("1 2.5\n", r"line 1: '2.5' is not"),
        ("1 2\n2 3\n1 4\n", r"line 3: user id '1' repeats line 1"),
        ("1 99999999999999999999\n", r"line 1: '99999999999999999999' does not fit in int64"),
        ("1 1_0\n", r"line 1: '1_0' is not"),
        ("\n\n", r"no user lines"),
    ],
)
def test_malformed_split_file_names_file_line_and_token(tmp_path, text, expected):
    path = tmp_path / "test.txt"
    path.write_text(text)
    with pytest.raises(InteractionFileError, match=expected) as err:
        load_user_lines(path)
    assert str(path) in str(err.value)


def test_repeated_items_count_once_and_rows_align_across_files(tmp_path):
    paths = _write(tmp_path, {"train": {9: [5, 6, 5], 4: [6]}, "test": {4: [7], 9: [8]}})
    data = SplitData.from_files({kind: load_user_lines(p) for kind, p in paths.items()})
    assert data.user_ids.tolist() == [4, 9] and data.item_ids.tolist() == [5, 6, 7, 8]
    assert data.files["train"].offsets.tolist() == [0, 1, 3] and data.files["train"].items.tolist() == [1, 0, 1]
    assert data.files["test"].items.tolist() == [2, 3] and data.lines == {"train": 2, "test": 2}


# ---------------------------------------------------------------- what each day may see


def test_retriever_is_fit_on_exactly_the_retriever_part(data, monkeypatch):
    fitted = {}
    real = public_lines.train_retriever

    def recording(tl, fit, item_map, cfg):
        fitted["pairs"] = sorted(zip(tl.user_ids[tl.user[fit]].tolist(), tl.item_ids[tl.item[fit]].tolist()))
        return real(tl, fit, item_map, cfg)

    monkeypatch.setattr(public_lines, "train_retriever", recording)
    fit, label = split_train(data, CFG)
    public_lines.fit_retriever(fit, CFG)
    assert fitted["pairs"] == sorted(zip(fit.row().tolist(), fit.items.tolist()))
    train = data.files["train"]
    for u in range(len(train)):
        mine = set(train.items[train.offsets[u]:train.offsets[u + 1]].tolist())
        a = set(fit.items[fit.offsets[u]:fit.offsets[u + 1]].tolist())
        b = set(label.items[label.offsets[u]:label.offsets[u + 1]].tolist())
        assert a | b == mine and not a & b and len(a) == 5  # half of 10


def test_training_days_see_only_the_retriever_part(prepared, split):
    retriever, label = _parts(prepared)
    for row in _rows(prepared, "train"):
        user, cands = row[RL.user_id], row[RL.candidate_item_ids]
        later = set(split["valid"][user]) | set(split["test"][user])
        assert set(row[RL.history_item_ids]) <= set(retriever[user])
        assert not set(cands) & set(retriever[user])  # the whole retriever part, not only the history
        assert row[RL.labels] == [int(c in label[user]) for c in cands]
        assert not later & set(row[RL.history_item_ids])
    first = [r for r in _rows(prepared, "train") if r[RL.request_id].endswith("-0")]
    assert all(r[RL.history_item_ids] == retriever[r[RL.user_id]][-CFG.history_len:] for r in first)


def test_held_out_days_exclude_everything_used_before(prepared, split):
    for kind, earlier in (("valid", ("train",)), ("test", ("train", "valid"))):
        rows = _rows(prepared, kind)
        assert rows
        for row in rows:
            user, cands = row[RL.user_id], row[RL.candidate_item_ids]
            used = [i for e in earlier for i in split[e][user]]
            assert row[RL.history_item_ids] == used[-CFG.history_len:]
            assert not set(cands) & set(used)
            assert row[RL.labels] == [int(c in split[kind][user]) for c in cands]
    items = {i for row in prepared.table.to_pylist() for i in row[RL.history_item_ids] + row[RL.candidate_item_ids]}
    assert not items & set(RESERVED)  # test-only items never reach anything


def test_extra_requests_have_random_subsets_of_the_retriever_part(prepared):
    retriever, _ = _parts(prepared)
    extra = [r for r in _rows(prepared, "train") if r[RL.request_id].endswith("-1")]
    assert len(extra) == len(retriever)
    for row in extra:
        mine = retriever[row[RL.user_id]]
        hist = row[RL.history_item_ids]
        assert hist and hist == [i for i in mine if i in hist]  # a subset, file order kept
    assert any(len(r[RL.history_item_ids]) < CFG.history_len for r in extra)


# ---------------------------------------------------------------- rows and days


def test_rows_follow_the_schema(prepared):
    table = prepared.table
    assert table.schema.equals(REQUEST_LOGS.arrow, check_metadata=True)
    assert table[RL.exposed].null_count == table[RL.true_click_prob].null_count == table.num_rows
    assert len(set(table[RL.request_id].to_pylist())) == table.num_rows
    times = table[RL.event_time].to_pylist()
    assert times == sorted(times)
    for row in table.to_pylist():
        n = len(row[RL.candidate_item_ids])
        assert 1 <= n <= CFG.candidates and len(row[RL.retriever_scores]) == len(row[RL.labels]) == n
        assert row[RL.retriever_scores] == sorted(row[RL.retriever_scores], reverse=True)
        assert all(0.0 <= s <= 1.0 for s in row[RL.retriever_scores])
        assert row[RL.event_time].date().isoformat() == row[RL.ds]
    assert prepared.calibration is not None and prepared.calibration[0] > 0


def test_days_are_ordered_and_counts_add_up(prepared, split):
    days = {kind: sorted({r[RL.ds] for r in _rows(prepared, kind)}) for kind in ("train", "valid", "test")}
    assert days["train"] == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert days["valid"] == ["2024-01-04"] and days["test"] == ["2024-01-05"]
    assert sum(prepared.requests_per_day().values()) == prepared.table.num_rows
    stats = prepared.kinds
    assert stats["train"]["requests"] == CFG.requests_per_user * len(split["train"])
    assert stats["valid"]["requests"] == len(split["valid"]) and stats["valid"]["skipped"] == 0
    assert stats["test"]["requests"] == len(split["test"]) - 1 and stats["test"]["skipped"] == 1
    assert EMPTY_TEST_USER not in {r[RL.user_id] for r in _rows(prepared, "test")}
    assert {r[RL.request_id] for r in _rows(prepared, "test")} == {f"{u}-4-0" for u in split["test"]
                                                                   if u != EMPTY_TEST_USER}


def test_without_a_valid_file_the_test_day_follows_the_training_days(split, tmp_path):
    paths = _write(tmp_path, {"train": split["train"], "test": split["test"]})
    data = SplitData.from_files({kind: load_user_lines(p) for kind, p in paths.items()})
    prep = build_lines_logs(data, LinesConfig(**{**CFG.__dict__, "requests_per_user": 1}))
    assert set(prep.kind) == {"train", "test"} and list(prep.requests_per_day())[-1] == "2024-01-04"
    for row in _rows(prep, "test"):
        assert not set(row[RL.candidate_item_ids]) & set(split["train"][row[RL.user_id]])


def test_same_seed_same_logs(data, prepared):
    assert build_lines_logs(data, CFG).table.equals(prepared.table)


# ---------------------------------------------------------------- the job


def _job():
    path = Path(__file__).resolve().parents[2] / "jobs" / "prepare_public.py"
    spec = importlib.util.spec_from_file_location("prepare_public", path)
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    return job


def test_job_writes_the_lake_and_prints_the_next_command(split, tmp_path, capsys):
    from deltalake import DeltaTable

    job, paths, lake = _job(), _write(tmp_path, split), Lake(str(tmp_path / "lake"))
    argv = ["--lake", lake.root, "--format", "lines", "--train", str(paths["train"]), "--valid",
            str(paths["valid"]), "--test", str(paths["test"]), "--candidates", "10", "--epochs", "1", "--dim", "8"]
    assert job.main(argv) == 0
    out = capsys.readouterr().out
    back = DeltaTable(lake.table_uri("request_logs"))
    assert back.metadata().partition_columns == [RL.ds]
    table = back.to_pyarrow_table()
    assert sorted({p[RL.ds] for p in back.partitions()}) == [f"2024-01-0{d}" for d in range(1, 6)]
    assert table.num_rows == 40 + 40 + 39
    assert "retriever recall@10" in out and "requests per day: 2024-01-01 train" in out
    assert f"next: python jobs/train_daily.py --lake {lake.root} --ds 2024-01-05" in out
    assert job.main(argv) == 2  # the table now holds rows
    assert "--mode overwrite" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--format", "lines", "--train", "a.txt"], "needs --train and --test"),
        (["--format", "lines", "--train", "a", "--test", "b", "--days", "3"], "--days: not for --format lines"),
        (["--ratings", "r.csv", "--test", "b"], "--test: only with --format lines"),
        ([], "--ratings is required"),
    ],
)
def test_job_refuses_a_wrong_combination_of_inputs(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        _job().main(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err
