"""Smoke test of bench/quality.py: a tiny synthetic run through the same core function, split and
report code as the recorded benchmark (seconds, not minutes); the ``--lake`` path on a tiny
Delta table of its own; the bootstrap and the relative-to-retriever column of the report."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import shutil

import numpy as np
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from bench.quality import (
    FIXED_SCORERS,
    METRICS,
    PRESETS,
    ROW_BY_NAME,
    LakeError,
    Results,
    SyntheticData,
    applicable_rows,
    bootstrap,
    evaluate,
    lake_days,
    lake_split,
    main,
    markdown,
    parse_args,
    run_benchmark,
    synthetic_table,
    time_split,
    to_json,
)
from dnr.config import DataConfig, ModelConfig
from dnr.data.collate import collate
from dnr.datasets.synth import make_requests
from dnr.datasets.synth_world import WorldConfig
from dnr.data.validate import hash_request_ids
from dnr.evaluation.bootstrap import PairedBootstrap, poisson_weights
from dnr.storage import Lake
from tests.unit.rerank_helpers import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dataclasses.replace(
    PRESETS["synthetic"],
    data=DataConfig(max_list_len=50, history_len=10, num_buckets=1024, batch_size=32),
    model=ModelConfig(d_model=16, n_layers=1, n_heads=2, ff_dim=32, dropout=0.0),
    steps=10,
    switch_fraction=0.5,
)
# 400 test requests: the oracle's N@6 lead over the retriever order is ~0.3 in this world, more
# than ten standard errors at this size.
SPEC = SyntheticData(num_items=2_000, train_days=2, requests_per_day=160, test_requests=400)
ROWS = [ROW_BY_NAME[name] for name in ("retriever order", "DNR-B", "oracle (true_click_prob)")]


@pytest.fixture(scope="module")
def table():
    return synthetic_table(SPEC)


def test_tiny_benchmark_has_every_row_finite_metrics_and_the_oracle_beats_the_retriever(table):
    split = time_split(table, eval_days=1, valid=False)
    assert TINY.lambda_e == 5  # the generator phase runs in the smoke test too

    results = run_benchmark(split, ROWS, seeds=[0], cfg=TINY, log=lambda line: None)

    assert results.rows == [row.name for row in ROWS]
    # the bootstrap's keys line up with the per-request arrays: evaluation-table order
    assert np.array_equal(results.request_hashes, hash_request_ids(split.eval.column("request_id")))
    retriever = results.per_request["retriever order"][0]
    assert retriever.shape == (split.eval.num_rows,)
    for i in (0, 1, 257, split.eval.num_rows - 1):  # across the 512-request batch edge too
        alone = evaluate(FIXED_SCORERS["retriever"], [collate(split.eval.slice(i, 1), TINY.data)])[1]
        np.testing.assert_allclose(alone, retriever[i:i + 1], equal_nan=True)
    for row in results.rows:
        assert all(math.isfinite(results.metrics[row][0][m]) for m in METRICS), row
    assert results.metrics["oracle (true_click_prob)"][0]["N@6"] > results.metrics["retriever order"][0]["N@6"] + 0.1
    text = markdown(results, "### tiny")
    assert all(f"| {row} |" in text for row in results.rows)
    assert "DNR-B − retriever order" in text
    report = json.loads(json.dumps(to_json(results, {"dataset": "synthetic"})))
    assert set(report["rows"]) == set(results.rows) and report["seeds"] == [0]


def test_validation_split_never_reads_the_test_day(table):
    test = time_split(table, eval_days=1, valid=False)
    valid = time_split(table, eval_days=1, valid=True)
    assert valid.eval_days == test.train_days[-1:]
    assert max(valid.train_days + valid.eval_days) < test.eval_days[0]
    assert valid.train.num_rows + valid.eval.num_rows == test.train.num_rows


# ------------------------------------------------------------------------------------ --lake

DAYS = [(dt.date(2024, 1, 1) + dt.timedelta(days=d)).isoformat() for d in range(5)]


def write_lake(root) -> Lake:
    """Five days of 100 synthetic requests in a Delta request_logs partitioned by ds."""
    world = WorldConfig(seed=0, num_items=500, num_users=1_000)
    rows = pa.concat_tables([make_requests(world, dt.date.fromisoformat(d), np.arange(100)) for d in DAYS])
    lake = Lake(str(root))
    write_deltalake(lake.table_uri("request_logs"), rows, partition_by=["ds"])
    return lake


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Lake:
    return write_lake(tmp_path_factory.mktemp("quality") / "lake")


def test_lake_days_train_before_the_eval_day_and_valid_holds_out_the_last_of_them():
    where = "the table"
    assert lake_days(DAYS, DAYS[3], None, False, where) == (tuple(DAYS[:3]), DAYS[3])
    assert lake_days(DAYS, DAYS[3], None, True, where) == (tuple(DAYS[:2]), DAYS[2])
    assert lake_days(DAYS, DAYS[4], [DAYS[2], DAYS[0]], False, where) == ((DAYS[0], DAYS[2]), DAYS[4])
    assert lake_days(DAYS, DAYS[4], [DAYS[2], DAYS[0]], True, where) == ((DAYS[0],), DAYS[2])
    with pytest.raises(LakeError, match="2024-02-01.*not in the table"):
        lake_days(DAYS, "2024-02-01", None, False, where)
    with pytest.raises(LakeError, match="2023-12-31"):
        lake_days(DAYS, DAYS[4], ["2023-12-31", DAYS[0]], False, where)
    with pytest.raises(LakeError, match=f"{DAYS[4]}.*not before --eval-ds {DAYS[3]}"):
        lake_days(DAYS, DAYS[3], [DAYS[0], DAYS[4]], False, where)
    with pytest.raises(LakeError, match="needs 2"):
        lake_days(DAYS, DAYS[1], None, True, where)


def test_the_lake_split_reads_its_days_only_and_valid_never_reads_the_eval_day(tmp_path):
    lake = write_lake(tmp_path / "lake")
    # D's files vanish but the Delta log still lists them: reading D would now fail
    shutil.rmtree(tmp_path / "lake" / "request_logs" / f"ds={DAYS[4]}")
    cfg = PRESETS["lake"]

    split, source, facts = lake_split(parse_args(["--lake", lake.root, "--eval-ds", DAYS[4], "--split", "valid"]),
                                      cfg, print)
    assert split.train_days == tuple(DAYS[:3]) and split.eval_days == (DAYS[3],)
    assert set(split.train.column("ds").to_pylist()) == set(DAYS[:3]) and split.train.num_rows == 300
    assert set(split.eval.column("ds").to_pylist()) == {DAYS[3]} and split.eval.num_rows == 100
    assert facts["table_version"] == 0 and "version 0" in source and DAYS[3] in source
    with pytest.raises(OSError):  # the test split does read D
        lake_split(parse_args(["--lake", lake.root, "--eval-ds", DAYS[4]]), cfg, print)


def test_a_missing_day_or_table_is_a_clear_error_naming_it(lake, tmp_path, capsys):
    assert main(["--lake", lake.root, "--eval-ds", "2024-03-01", "--seeds", "0"]) == 2
    assert "ds 2024-03-01 not in" in capsys.readouterr().err
    assert main(["--lake", lake.root, "--eval-ds", DAYS[4], "--train-days", DAYS[0], "2023-06-01"]) == 2
    assert "ds 2023-06-01 not in" in capsys.readouterr().err
    assert main(["--lake", str(tmp_path / "empty"), "--eval-ds", DAYS[4]]) == 2
    assert f"no Delta table at {tmp_path / 'empty' / 'request_logs'}" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "synthetic", "--lake", "x"], "not allowed with argument"),
    ([], "one of the arguments --dataset --lake is required"),
    (["--lake", "x"], "--lake needs --eval-ds"),
    (["--dataset", "synthetic", "--eval-ds", "2024-01-01"], "apply to --lake, not to --dataset synthetic"),
    (["--lake", "x", "--eval-ds", "2024-01-01", "--ratings", "r.csv"], "--ratings applies to --dataset"),
    (["--lake", "x", "--eval-ds", "January"], "'January' is not a YYYY-MM-DD ds"),
    (["--dataset", "lake"], "invalid choice"),
])
def test_bad_argument_combinations_are_argparse_errors_naming_them(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        parse_args(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_presets_the_lake_one_is_the_synthetic_budget_with_a_catalogue_sized_table():
    assert PRESETS["lake"].data.num_buckets == 1 << 18
    assert dataclasses.replace(PRESETS["lake"], data=PRESETS["synthetic"].data) == PRESETS["synthetic"]
    assert parse_args(["--lake", "x", "--eval-ds", DAYS[0]]).preset == "lake"
    assert parse_args(["--dataset", "synthetic"]).preset == "synthetic"


def test_no_oracle_row_where_the_evaluation_day_lacks_true_click_prob(lake):
    split, _, _ = lake_split(parse_args(["--lake", lake.root, "--eval-ds", DAYS[4]]), PRESETS["lake"], print)
    args = parse_args(["--lake", lake.root, "--eval-ds", DAYS[4], "--rows", "retriever order",
                       "oracle (true_click_prob)"])
    assert [r.name for r in applicable_rows(args, split, print)] == args.rows
    column = split.eval.schema.get_field_index("true_click_prob")
    partial = pa.array([None] + split.eval.column(column).to_pylist()[1:], split.eval.schema.field(column).type)
    real = dataclasses.replace(split, eval=split.eval.set_column(column, "true_click_prob", partial))
    assert [r.name for r in applicable_rows(args, real, print)] == ["retriever order"]


# ------------------------------------------------------------------------------------ reporting


def made_up_results(num_requests: int = 5_000) -> tuple[Results, np.ndarray]:
    """Retriever order and DNR-B over two seeds, DNR-B ahead by ~0.02; every 7th request has no
    positive (NaN). More requests than one bootstrap chunk (4,096)."""
    rng = np.random.default_rng(0)
    ids = pa.array([f"r{i}" for i in range(num_requests)])
    results = Results(["retriever order", "DNR-B"], [0, 1], hash_request_ids(ids))
    base = rng.uniform(0.2, 0.6, num_requests)
    base[::7] = np.nan
    for seed in (0, 1):
        for row, values in (("retriever order", base), ("DNR-B", base + rng.normal(0.02, 0.1, num_requests))):
            n6 = float(np.nanmean(values))
            results.add(row, seed, {m: n6 if m == "N@6" else 0.5 for m in METRICS}, values, 1.0)
    return results, ids


def test_the_bootstrap_is_the_projects_paired_poisson_one_keyed_by_request_id():
    results, ids = made_up_results()
    delta = (results.per_request["DNR-B"][0] + results.per_request["DNR-B"][1]) / 2 - results.per_request[
        "retriever order"][0]
    direct = PairedBootstrap.empty(2000)
    direct.add(delta, poisson_weights(hash_request_ids(ids), 2000))
    expected = direct.interval(0.95)

    got = bootstrap(results)[("DNR-B", "retriever order")]
    assert got.requests == expected.requests == 5_000 - len(range(0, 5_000, 7))
    np.testing.assert_allclose([got.mean, got.low, got.high], [expected.mean, expected.low, expected.high],
                               rtol=1e-12)
    assert got.low > 0  # a 0.02 lead over ~4,300 requests with a 0.07 spread: clearly positive
    report = to_json(results, {})
    assert report["vs_retriever"]["DNR-B"]["low"] == got.low
    assert report["comparisons"]["DNR-B − retriever order"]["high"] == got.high


def test_the_table_shows_each_rows_ratio_and_interval_against_the_retriever_order():
    results, _ = made_up_results()
    interval = bootstrap(results)[("DNR-B", "retriever order")]
    ratio = results.summary("DNR-B", "N@6")[0] / results.summary("retriever order", "N@6")[0]

    text = markdown(results, "### made up")
    assert "| N@6 / retriever | N@6 − retriever [95% CI] |" in text
    lines = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    assert lines["| retriever order"].endswith("| 1.000x | (reference) |")
    assert lines["| DNR-B"].endswith(f"| {ratio:.3f}x | {interval.mean:+.4f} [{interval.low:+.4f}, "
                                     f"{interval.high:+.4f}] better |")
    assert 1.02 < ratio < 1.08


def test_the_command_on_a_lake_writes_its_table_and_json(lake, tmp_path):
    out = tmp_path / "results"
    code = main(["--lake", lake.root, "--eval-ds", DAYS[4], "--steps", "2", "--seeds", "0", "--out", str(out),
                 "--tag", "smoke", "--rows", "retriever order", "PRM concat", "DNR-B", "oracle (true_click_prob)"])
    assert code == 0
    text = (out / f"quality_lake_{DAYS[4]}_smoke.md").read_text()
    report = json.loads((out / f"quality_lake_{DAYS[4]}_smoke.json").read_text())
    assert f"Lake {lake.root}, request_logs version 0: train days {DAYS[0]}..{DAYS[3]} (4 day(s), 400 requests)" in text
    assert all(f"| {row} |" in text for row in ("retriever order", "PRM concat", "DNR-B", "oracle (true_click_prob)"))
    assert "| 1.000x | (reference) |" in text and "DNR-B − PRM concat" in text
    assert report["meta"]["train_days"] == DAYS[:4] and report["meta"]["eval_days"] == [DAYS[4]]
    assert report["meta"]["table_version"] == 0 and report["meta"]["preset"] == "lake"
    assert report["meta"]["config"]["data"]["num_buckets"] == 1 << 18
    assert set(report["vs_retriever"]) == {"PRM concat", "DNR-B", "oracle (true_click_prob)"}


def test_the_daily_recipe_trains_like_the_daily_job_and_keeps_the_best_weights(lake, tmp_path):
    """--config: the daily job's YAML (here public.yaml, made tiny): the hash hold-out of the
    training days is never trained on, the hold-out is scored every few steps and at each
    epoch's end, the best weights are the ones evaluated, DNR rows run on the config's mode."""
    from bench.quality import daily_recipe, holdout

    overrides = ["data.num_buckets=1024", "data.batch_size=16", "model.d_model=16", "dnr.generator_hidden=8",
                 "train.epochs=3", "validation.every_steps=4", "validation.patience=0"]
    cfg = daily_recipe("jobs/configs/public.yaml", overrides)
    assert cfg.recipe == "daily" and cfg.data.batch_size == 16 * 2  # a step is what 2 DDP workers average
    assert cfg.dnr_mode == "add" and cfg.validation.fraction == 0.1 and cfg.max_epochs == 3
    out = tmp_path / "results"
    code = main(["--lake", lake.root, "--eval-ds", DAYS[4], "--config", "jobs/configs/public.yaml", "--set", *overrides,
                 "--seeds", "0", "--out", str(out), "--tag", "recipe", "--rows", "retriever order", "PRM add", "DNR-B"])
    assert code == 0
    report = json.loads((out / f"quality_lake_{DAYS[4]}_recipe.json").read_text())
    assert report["meta"]["recipe"] == "jobs/configs/public.yaml" and report["meta"]["config"]["dnr_mode"] == "add"
    trained, held = holdout(read_all_train_days(lake), 0.1)
    per_epoch = trained.num_rows // 32
    text = (out / f"quality_lake_{DAYS[4]}_recipe.md").read_text()
    assert f"at most 3 epochs of {per_epoch} steps of batch 32" in text  # the hold-out is not trained on
    for row in ("PRM add", "DNR-B"):
        run = report["rows"][row]["0"]
        steps = [s for s, _ in run["curve"]]
        assert run["steps"] == 3 * per_epoch and steps[0] == 0  # patience 0: every epoch runs
        assert set(steps[1:]) == {s for s in range(1, run["steps"] + 1) if s % 4 == 0 or s % per_epoch == 0}
        best = max(v for s, v in run["curve"][1:])
        assert dict(map(tuple, run["curve"]))[run["best_step"]] == best
    assert held.num_rows > 0 and not set(held["request_id"].to_pylist()) & set(trained["request_id"].to_pylist())


def read_all_train_days(lake: Lake) -> pa.Table:
    from deltalake import DeltaTable

    table = DeltaTable(lake.table_uri("request_logs")).to_pyarrow_table()
    return table.filter(pa.compute.is_in(table["ds"], pa.array(DAYS[:4])))
