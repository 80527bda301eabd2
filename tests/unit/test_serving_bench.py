"""Smoke test of bench/serving.py: tiny models through the same export, load, parity check,
interleaved timing and ratios as the recorded benchmark (seconds, not minutes)."""

from __future__ import annotations

import json
import math

import pytest

from bench.serving import machine, run_benchmark
from dnr.config import DataConfig, JobConfig
from tests.unit.rerank_helpers import one_thread, tiny_model  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

D = 16
TINY = JobConfig(data=DataConfig(num_buckets=256), model=tiny_model("denoise"))


def test_tiny_serving_benchmark_times_every_variant_and_reports_ratios():
    results = run_benchmark({"tiny": TINY}, batch_sizes=[1, 3], list_len=8, history_len=4,
                            repeats=3, warmup=1, modes=("none", "denoise"), log=lambda line: None)

    entry = results["tiny"]
    assert (entry["list_len"], entry["history_len"], entry["num_buckets"]) == (8, 4, 256)
    # DNR's only extra weights are the score MLP: Linear(1, d) and Linear(d, d)
    # the score network (1 -> D -> D) and the learned scale of logit(x)
    assert entry["params"]["denoise"] - entry["params"]["none"] == (D + D) + (D * D + D) + 1
    assert set(entry["batches"]) == {"1", "3"}
    for batch_size, batch in entry["batches"].items():
        for mode in ("none", "denoise"):
            for path in ("eager", "exported"):
                stats = batch["stats"][mode][path]
                # more calls at the smaller batch: 3 at B=3, 9 at B=1
                assert stats["calls"] == 9 // int(batch_size)
                assert 0 < stats["min_ms"] <= stats["median_ms"] <= stats["p90_ms"]
                assert stats["median_ms_per_request"] == pytest.approx(stats["median_ms"] / int(batch_size))
        ratios = batch["ratios"]
        assert {"denoise/none eager median_ms", "denoise/none exported p90_ms", "denoise/none exported min_ms",
                "exported/eager denoise median_ms"} <= set(ratios)
        assert all(math.isfinite(v) and v > 0 for v in ratios.values())
    json.dumps(results)
    assert machine()["nproc"] >= 1
