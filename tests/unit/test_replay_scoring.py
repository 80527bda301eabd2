"""Replay scoring, bootstrap, gate and report without Ray: the pieces the scoring actors run."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math

import numpy as np
import pytest
import torch

from dnr.config import GateConfig, JobConfig, config_to_json
from dnr.data.collate import collate
from dnr.datasets.synth import make_requests
from dnr.datasets.synth_world import WorldConfig
from dnr.evaluation.bootstrap import DeltaInterval, PairedBootstrap, poisson_weights
from dnr.evaluation.gate import ReplaySummary, decide
from dnr.metrics import MetricAccumulator
from dnr.evaluation.replay import summarize
from dnr.evaluation.report import report_dir, write_report
from dnr.evaluation.scoring import ReplayScorer, ReplaySpec, ReplayState, load_reranker, reduce_states
from dnr.storage import Lake
from dnr.training import checkpoint as ckpt
from dnr.training.step import build_train_parts
from tests.unit.rerank_helpers import TINY_DATA, tiny_model

CFG = JobConfig(data=dataclasses.replace(TINY_DATA, max_list_len=50, history_len=8),
                model=tiny_model("denoise"))


@pytest.fixture(scope="module")
def day():
    """400 synthetic requests of one day (with true_click_prob: the oracle arm is on)."""
    return make_requests(WorldConfig(seed=3), dt.date(2026, 5, 4), np.arange(400))


def _checkpoint(path, cfg: JobConfig = CFG, edit=None) -> str:
    torch.manual_seed(0)
    parts = build_train_parts(cfg.model, cfg.data, cfg.dnr, cfg.optim)
    if edit is not None:
        edit(parts.reranker)
    ckpt.save(path, parts, ckpt.TrainingProgress(), config_to_json(cfg), lineage={})
    return str(path)


def _spec(checkpoints: dict, replicates: int = 200) -> ReplaySpec:
    return ReplaySpec(checkpoints=checkpoints, metrics=("N@6", "AUC", "H@6"), replicates=replicates)


def _score(spec: ReplaySpec, table, lake_root: str) -> ReplayState:
    scorer = ReplayScorer(spec, lake_root)
    rows = [scorer(table.slice(i, 128)).column("state")[0].values.to_numpy() for i in range(0, table.num_rows, 128)]
    return reduce_states(spec, rows)


def test_state_adds_up_and_matches_direct_metrics(day, tmp_path):
    spec = _spec({"candidate": _checkpoint(tmp_path / "c")})
    whole = _score(spec, day, str(tmp_path))
    halves = [_score(spec, day.slice(0, 150), str(tmp_path)), _score(spec, day.slice(150), str(tmp_path))]
    np.testing.assert_allclose(halves[0].merge(halves[1]).to_vector(), whole.to_vector(), rtol=1e-9, atol=1e-9)

    batch = collate(day, CFG.data)
    direct = MetricAccumulator(ks=spec.ks)
    direct.update(batch.scores, batch.labels, batch.mask & batch.label_mask)
    assert whole.accumulators["retriever"].compute() == pytest.approx(direct.compute(), nan_ok=True)
    assert whole.accumulators["candidate"].compute()["requests"] == day.num_rows
    assert whole.oracle_requests[0] == day.num_rows
    oracle, retriever = (whole.accumulators[a].compute()["N@6"] for a in ("oracle", "retriever"))
    assert oracle > retriever  # the world's true click probability ranks better than the retriever


def test_fresh_denoise_model_is_exactly_the_retriever_order(day, tmp_path):
    # zero-initialised head: logits = logit(x), so every paired difference is exactly 0
    spec = _spec({"candidate": _checkpoint(tmp_path / "c")})
    summary = summarize(_score(spec, day, str(tmp_path)), 0.95)
    for metric in spec.metrics:
        d = summary.delta(metric, "retriever")
        assert (d.mean, d.low, d.high) == (0.0, 0.0, 0.0) and d.requests > 0
    assert summary.sanity["candidate"]["nonfinite_scores"] == 0
    assert summary.sanity["candidate"]["score_std"] > 0.1
    assert sum(summary.delta_hist) == summary.delta("N@6").requests


def test_nan_scores_are_counted_and_rejected_not_raised(day, tmp_path):
    def poison(model):
        with torch.no_grad():
            model.head[-1].bias.fill_(float("nan"))

    spec = _spec({"candidate": _checkpoint(tmp_path / "bad", edit=poison),
                  "baseline": _checkpoint(tmp_path / "good")})
    summary = summarize(_score(spec, day, str(tmp_path)), 0.95)
    real = int(collate(day, CFG.data).mask.sum())
    assert summary.sanity["candidate"]["nonfinite_scores"] == real
    assert summary.sanity["baseline"]["nonfinite_scores"] == 0
    decision = decide(summary, GateConfig(min_requests=1))
    assert not decision.promote
    assert any(r.startswith("FAIL finite_scores") for r in decision.reasons)


def test_a_noisy_candidate_loses_to_a_baseline_and_is_rejected(day, tmp_path):
    def scramble(model):
        torch.manual_seed(1)
        with torch.no_grad():
            model.head[-1].weight.normal_(0.0, 30.0)  # a large random correction of logit(x)

    spec = _spec({"candidate": _checkpoint(tmp_path / "noisy", edit=scramble),
                  "baseline": _checkpoint(tmp_path / "base")})
    summary = summarize(_score(spec, day, str(tmp_path)), 0.95)
    d = summary.delta("N@6")
    assert summary.reference == "baseline" and d.high < 0  # clearly worse, interval below zero
    decision = decide(summary, GateConfig(min_requests=1))
    failed = {c.name for c in decision.checks if not c.passed}
    assert not decision.promote and {"primary", "retriever_floor"} <= failed


def test_load_reranker_reads_tensors_and_config(tmp_path):
    model, cfg = load_reranker(_checkpoint(tmp_path / "c"), Lake(str(tmp_path)))
    assert cfg == CFG and not model.training


def test_poisson_weights_are_deterministic_with_unit_mean_and_variance():
    hashes = np.arange(20_000, dtype=np.uint64) * np.uint64(7919)
    w = poisson_weights(hashes, 50, seed=0)
    assert w.shape == (20_000, 50) and np.array_equal(w, poisson_weights(hashes, 50, seed=0))
    assert abs(w.mean() - 1.0) < 0.01 and abs(w.var() - 1.0) < 0.02
    assert not np.array_equal(w[:, 0], w[:, 1]) and not np.array_equal(w, poisson_weights(hashes, 50, seed=1))


def test_bootstrap_interval_has_the_normal_width_and_covers_the_mean():
    rng = np.random.default_rng(0)
    n, replicates = 4000, 1000
    delta = rng.normal(0.1, 1.0, n)
    delta[::10] = np.nan  # excluded requests never count
    boot = PairedBootstrap.empty(replicates)
    for chunk in np.array_split(np.arange(n), 7):
        boot.add(delta[chunk], poisson_weights(chunk.astype(np.uint64), replicates))
    d = boot.interval(0.95)
    kept = delta[~np.isnan(delta)]
    assert d.requests == kept.size and d.mean == pytest.approx(kept.mean())
    expected = 2 * 1.96 * kept.std() / math.sqrt(kept.size)
    assert d.low < d.mean < d.high and (d.high - d.low) == pytest.approx(expected, rel=0.15)


def _summary(delta_mean: float, low: float, *, nonfinite=0.0, std=1.0, tied=0.0, ranked=1000,
             floor=0.01) -> ReplaySummary:
    metrics = {"N@6": 0.45, "H@6": 0.6, "AUC": 0.7, "requests": 1200.0, "requests_ranked": float(ranked)}
    interval = DeltaInterval(delta_mean, low, low + 0.02, ranked)
    return ReplaySummary(
        metrics={"candidate": metrics, "baseline": metrics, "retriever": {**metrics, "N@6": 0.45 - floor}},
        deltas={"candidate-baseline": {m: interval for m in ("N@6", "AUC", "H@6")},
                "candidate-retriever": {m: DeltaInterval(floor, floor - 0.01, floor + 0.01, ranked)
                                        for m in ("N@6", "AUC", "H@6")}},
        sanity={"candidate": {"nonfinite_scores": nonfinite, "score_mean": 0.0, "score_std": std,
                              "tied_fraction": tied, "scored_candidates": 1e4}},
        reference="baseline")


@pytest.mark.parametrize("case, expected_fail", [
    (dict(delta_mean=0.002, low=-0.003), set()),                       # within tolerance: promote
    (dict(delta_mean=-0.004, low=-0.012), {"primary"}),                # regression beyond 0.005
    (dict(delta_mean=-0.02, low=-0.03), {"primary", "guardrail:AUC", "guardrail:H@6"}),
    (dict(delta_mean=0.0, low=-0.001, nonfinite=3), {"finite_scores"}),
    (dict(delta_mean=0.0, low=-0.001, std=0.0, tied=1.0), {"score_spread", "not_tied"}),
    (dict(delta_mean=0.0, low=-0.001, ranked=50), {"requests"}),
    (dict(delta_mean=0.0, low=-0.001, floor=-0.01), {"retriever_floor"}),
])
def test_gate_decisions(case, expected_fail):
    decision = decide(_summary(**case), GateConfig())
    failed = {c.name for c in decision.checks if not c.passed}
    assert failed == expected_fail and decision.promote == (not expected_fail)
    assert len(decision.reasons) == 4 + 1 + 2 + 1  # every check is reported, passed or not
    assert decision.reasons[0].startswith("FAIL" if expected_fail else "PASS")


def test_report_files_and_vacuum_safety(day, tmp_path):
    from deltalake import DeltaTable, write_deltalake
    import pyarrow as pa
    from dnr.schemas import REPLAY_REPORTS

    lake = Lake(str(tmp_path / "lake"))
    spec = _spec({"candidate": _checkpoint(tmp_path / "c")})
    summary = summarize(_score(spec, day, str(tmp_path)), 0.95)
    decision = decide(summary, GateConfig(min_requests=1))
    uri = write_report(lake, summary, decision, {"report_id": "r1", "ds": "2026-05-04"}, "N@6")
    assert uri == report_dir(lake, "r1")
    text = (tmp_path / "lake/replay_reports/_reports/r1/report.md").read_text()
    assert f"**Decision: {decision.label.upper()}**" in text and "| retriever order |" in text
    for png in ("metrics.png", "delta_N6.png", "calibration.png"):
        assert (tmp_path / "lake/replay_reports/_reports/r1" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in text
    assert json.loads((tmp_path / "lake/replay_reports/_reports/r1/report.json").read_text())["decision"] == decision.label

    row = {f.name: None for f in REPLAY_REPORTS.arrow} | {
        "report_id": "r1", "created_at": dt.datetime.now(dt.timezone.utc), "ds": "2026-05-04",
        "candidate_version": "dnr-v0001", "requests_evaluated": 1, "rows_quarantined": 0,
        "metrics_json": "{}", "decision": "reject", "reasons": "[]"}
    write_deltalake(lake.table_uri("replay_reports"), pa.Table.from_pylist([row], REPLAY_REPORTS.arrow))
    doomed = DeltaTable(lake.table_uri("replay_reports")).vacuum(
        retention_hours=0, dry_run=True, enforce_retention_duration=False, full=True)
    assert not [f for f in doomed if "_reports" in f]
