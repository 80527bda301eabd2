"""model.family=degre through the real daily path: Ray Train DDP, checkpoint, registry, replay
evaluation. (That a warm start continues the evaluator and its optimizer is tested on the
checkpoint round trip in tests/unit/test_degre.py, without Ray.)"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from deltalake import DeltaTable

from dnr.checkpoints.reader import load_reranker
from dnr.config import load_config
from dnr.data.scan import UnreadableFileError
from dnr.registry import Registry
from dnr.training import checkpoint as ckpt
from dnr.daily.run import run_daily, steps_per_epoch
from tests.integration.test_train import LENIENT_GATE, TINY, _day_files, add_days, ds

pytestmark = pytest.mark.integration

DEGRE = ["model.family=degre", "train.model_name=degre", "degre.list_len=4", "degre.beam_width=2",
         "degre.evaluator_d_model=16", "degre.evaluator_heads=2"]


def test_degre_daily_run_trains_registers_and_a_failed_replay_is_retried_by_the_re_run(ray_cluster, local_lake):
    add_days(local_lake, 0, 1, rows=255)  # an odd window (511) over 2 workers
    add_days(local_lake, 1, 2)
    cfg = load_config(None, TINY + LENIENT_GATE + DEGRE)
    held_out = sorted(_day_files(local_lake, 2))
    for path in held_out:  # the held-out day's file is unavailable during the first replay
        os.rename(path, path + ".away")
    with pytest.raises(UnreadableFileError, match=held_out[0]):
        run_daily(local_lake, cfg, verbose=False)
    [row] = Registry(local_lake).versions("degre")
    assert row.status == "candidate" and row.family == "degre"
    metrics = json.loads(row.metrics_json)
    assert row.global_step == steps_per_epoch(511, cfg)
    # the equal split trains 255 per worker: the one request left out is counted, not lost silently
    assert metrics["train/requests_epoch"] == 510 and metrics["train/requests_left_out"] == 1

    # the file is back: the re-run has nothing to train, and evaluates the unevaluated candidate
    for path in held_out:
        os.rename(path + ".away", path)
    first = run_daily(local_lake, cfg, verbose=False)
    assert (first.status, first.version) == ("skipped", row.version)
    assert first.replay_decision is not None  # the generator's lists went through the same replay
    assert first.window == (ds(0), ds(1))

    loaded = ckpt.load(first.checkpoint_uri)
    # both models with item tables are sharded: each has its fused table-optimizer state too
    assert {"reranker", "reranker_opt", "reranker_table_opt", "evaluator", "evaluator_opt",
            "evaluator_table_opt"} <= loaded.parts
    assert "generator" not in loaded.parts  # DNR's noise generator has no place in a degre run
    assert loaded.progress.phase == "distill"
    served, _ = load_reranker(first.checkpoint_uri, local_lake)
    assert served.decode_len == 4  # the served generator decodes K = 4
    reports = DeltaTable(local_lake.table_uri("replay_reports")).to_pyarrow_table().to_pylist()
    assert [(r["ds"], r["candidate_version"]) for r in reports] == [(ds(2), first.version)]
    stored = reports[0]["report_uri"]  # relative to the lake root, so a copied lake finds its reports
    assert not stored.startswith(("/", local_lake.root)) and Path(local_lake.resolve(stored), "report.md").is_file()

    events = list(Path(local_lake.uri("tensorboard", row.run_name)).glob("events.out.tfevents.*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(events[0].parent)).Reload().Tags()
    assert {"train/loss_eval", "train/loss_distill", "train/loss_beam", "train/mined_value",
            "train/loss_theta", "train/evaluator_lr"} <= set(tags["scalars"])
