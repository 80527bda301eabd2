"""Smoke test of bench/quality.py: a tiny synthetic run through the same core function, split and
report code as the recorded benchmark (seconds, not minutes)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from bench.quality import (
    METRICS,
    PRESETS,
    ROW_BY_NAME,
    SyntheticData,
    markdown,
    run_benchmark,
    synthetic_table,
    time_split,
    to_json,
)
from dnr.config import DataConfig, ModelConfig
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
