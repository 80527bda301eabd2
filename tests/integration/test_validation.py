"""Validation inside the daily run, on the shared local Ray: the hold-out is counted and never
trained on, the best checkpoint (not the last) is registered, early stopping ends the run, the
curve reaches TensorBoard. (A warm start from a validated checkpoint, and the next run's own
validation: tests/e2e/test_train_daily_job.py; a resume mid-run: the killed-workers test.)"""

from __future__ import annotations

import json
import math

import pytest

from dnr.config import load_config
from dnr.registry import Registry
from dnr.training import checkpoint as ckpt
from dnr.daily.run import run_daily, steps_per_epoch
from tests.integration.test_train import NO_REPLAY, TINY, add_days

pytestmark = pytest.mark.integration

ROWS = 512
# min_delta=1 cannot be met (N@6 is in [0, 1]): the first scored evaluation is the best, the
# next one uses up the patience, so the run stops after 2 x every_steps steps, deterministically
STOP_AFTER_TWO = ["data.batch_size=32", "validation.fraction=0.2", "validation.every_steps=2", "validation.patience=1",
                  "validation.min_delta=1.0"]


def test_early_stopping_registers_the_best_checkpoint_not_the_last(ray_cluster, local_lake):
    add_days(local_lake, 0, 2, rows=ROWS)
    cfg = load_config(None, TINY + NO_REPLAY + STOP_AFTER_TWO)
    result = run_daily(local_lake, cfg, ds="2026-02-02", verbose=False)
    assert result.status == "trained"

    # the hold-out is ~20% of the window (day 0); the epoch's steps are those of the rest
    assert result.rows_read == ROWS and result.rows_quarantined == 0
    assert 70 < result.rows_holdout < 135, result.rows_holdout
    trained = ROWS - result.rows_holdout
    row = Registry(local_lake).get(result.version)
    metrics = json.loads(row.metrics_json)
    curve = metrics["valid/curve"]
    start, *scored = curve  # the parent's (here fresh) weights, then one per evaluation
    assert [step for step, _ in scored] == [2, 4], curve
    assert all(math.isfinite(v) for _, v in curve)

    # stopped early: 4 steps of an epoch that has more
    assert steps_per_epoch(trained, cfg) > 4
    assert metrics["train/stopped_early"] == 1.0 and metrics["train/last_global_step"] == 4
    # the registered checkpoint is the best-scored one (step 2), not the last one (step 4)
    assert row.global_step == 2 and metrics["global_step"] == 2
    assert metrics["valid/registered"] == pytest.approx(scored[0][1])
    loaded = ckpt.load(row.checkpoint_uri)
    assert loaded.progress.global_step == 2
    assert loaded.progress.valid_best == pytest.approx(scored[0][1])

    # the curve is in TensorBoard too, one point per evaluation
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(local_lake.uri("tensorboard", row.run_name)).Reload()
    assert [e.step for e in events.Scalars("valid/N@6")] == [step for step, _ in curve]
    assert [e.value for e in events.Scalars("valid/N@6")] == pytest.approx([v for _, v in curve], rel=1e-6)
