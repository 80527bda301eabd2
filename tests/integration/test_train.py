"""Ray Train on the shared local Ray: DDP keeps both models identical on every rank; the daily
run is incremental and idempotent; a killed worker is recovered with no step lost or repeated,
on the same worker count and on another."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from deltalake import DeltaTable, write_deltalake
from ray.train import TrainingFailedError

from dnr.config import config_from_dict, config_to_dict, load_config
from dnr.datasets.synth import make_requests
from dnr.data.validate import holdout_mask
from dnr.datasets.synth_world import WorldConfig
from dnr.data.window import Window
from dnr.registry import Registry
from dnr.storage import Lake
from dnr.training import checkpoint as ckpt
from dnr.daily.run import run_daily, steps_per_epoch

pytestmark = pytest.mark.integration

TINY = ["data.num_buckets=1024", "data.history_len=10", "data.batch_size=64", "model.d_model=16",
        "model.n_layers=1", "model.n_heads=2", "model.ff_dim=32", "train.num_workers=2",
        "train.log_every_steps=2", "dnr.lambda_e=3", "dnr.generator_hidden=16"]
#: the gate's decision logic is unit-tested; here it must let a few-step model through so that
#: the lifecycle (promotion, parent = production) is exercised deterministically
LENIENT_GATE = ["gate.min_requests=1", "gate.tolerance=1", "gate.guardrail_tolerance=1",
                "gate.retriever_tolerance=1", "gate.bootstrap_replicates=200", "gate.num_scorers=1"]
NO_REPLAY = ["gate.enabled=false"]
DAY0 = dt.date(2026, 2, 1)
WORLD = WorldConfig(seed=3, num_users=2_000, num_items=5_000)


def add_days(lake: Lake, first: int, days: int, rows: int = 256) -> None:
    for d in range(first, first + days):
        table = make_requests(WORLD, DAY0 + dt.timedelta(days=d), np.arange(rows))
        write_deltalake(lake.table_uri("request_logs"), table, partition_by=["ds"], mode="append",
                        storage_options=lake.storage_options())


def ds(d: int) -> str:
    return (DAY0 + dt.timedelta(days=d)).isoformat()


def _ddp_loop(loop_cfg: dict) -> None:
    """Seeds differ per rank on purpose: identical dense parameters afterwards prove DDP synced
    them. The two half-steps run one by one, with a snapshot after each."""
    import ray.train

    from dnr.training.loop import RerankCollate
    from dnr.training.sharding import distribute
    from dnr.training.score_scale import observe_real_scores, score_quantiles
    from dnr.training.recipes.prm import generator_update, reranker_update
    from dnr.training.step import build_train_parts, reranker_context, unwrap

    cfg = config_from_dict(loop_cfg["config"])
    rank = ray.train.get_context().get_world_rank()
    torch.manual_seed(100 + rank)
    parts = build_train_parts(cfg.model, cfg.data, cfg.dnr, cfg.optim, table_device="meta")
    parts = distribute(parts, torch.device("cpu"), cfg.train, cfg.optim)
    generator_start = {k: v.clone() for k, v in unwrap(parts.generator).state_dict().items()}
    snapshots, untouched = [], []
    for step, batch in enumerate(ray.train.get_dataset_shard("train").iter_torch_batches(
            batch_size=cfg.data.batch_size, collate_fn=RerankCollate(cfg.data))):
        # all-reduced: the score sketch is the same on every rank
        observe_real_scores(score_quantiles(parts.reranker), batch, cfg.dnr.hist_decay, with_auc=True)
        context = reranker_context(parts.reranker, batch)
        reranker_update(batch, parts, parts.generator, context, cfg.dnr, cfg.optim)
        snapshots.append(_dense_snapshot(parts))
        before = _reranker_state(parts)
        generator_update(batch, parts, context, cfg.dnr, cfg.optim)
        snapshots.append(_dense_snapshot(parts))
        untouched.append(all(torch.equal(before[k], v) for k, v in _reranker_state(parts).items()))
        if step + 1 == loop_cfg["steps"]:
            break
    table = parts.reranker.state_dict()["item_embedding.collection.embeddings.item.weight"]
    torch.save({"snapshots": snapshots, "untouched": untouched,
                "rows": [(s.metadata.shard_offsets[0], s.metadata.shard_sizes[0]) for s in table.local_shards()],
                "local_table_bytes": sum(s.tensor.numel() * s.tensor.element_size() for s in table.local_shards()),
                "generator": unwrap(parts.generator).state_dict(), "generator_start": generator_start},
               Path(loop_cfg["out"]) / f"rank{rank}.pt")
    ray.train.report({"steps": len(untouched)})


def _dense_snapshot(parts) -> dict[str, torch.Tensor]:
    """Every dense parameter of the reranker and the generator (not the sharded table), and the
    reranker's score sketch (merged across the workers by an all-reduce of its counts)."""
    from dnr.training.step import unwrap

    reranker = {f"reranker.{k}": v.detach().clone() for k, v in unwrap(parts.reranker).named_parameters()
                if "item_embedding" not in k}
    reranker["reranker.score_quantiles.mass"] = unwrap(parts.reranker).score_quantiles.mass.clone()
    return reranker | {f"generator.{k}": v.detach().clone()
                       for k, v in unwrap(parts.generator).named_parameters()}


def _reranker_state(parts) -> dict[str, torch.Tensor]:
    """This rank's rows of the reranker's table, its fused optimizer state, and its dense weights."""
    state = {}
    for key, value in parts.reranker.state_dict().items():
        shards = value.local_shards() if hasattr(value, "local_shards") else None
        state[key] = torch.cat([s.tensor.flatten() for s in shards]).clone() if shards else value.clone()
    for key, states in parts.reranker_opt.embedding.state_dict()["state"].items():
        for name, value in states.items():
            state[f"opt.{key}.{name}"] = torch.cat([s.tensor.flatten() for s in value.local_shards()]).clone()
    return state


def test_two_workers_keep_dense_parameters_identical_and_each_row_on_one_rank(ray_cluster, local_lake, tmp_path):
    """The adversarial step's three guarantees with sharded tables, after each half-step."""
    from ray import cloudpickle
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    add_days(local_lake, 0, 1, rows=1024)
    cfg = load_config(None, TINY)
    window = Window.open(local_lake, ds(0), ds(0))
    trainer = TorchTrainer(
        _ddp_loop,
        train_loop_config={"config": config_to_dict(cfg), "steps": 6, "out": str(tmp_path)},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name="ddp-sync", storage_path=str(tmp_path / "runs")),
        datasets={"train": window.validated(cfg.data)},
    )
    trainer.fit()
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    # 1. after each of the 12 half-steps, every dense parameter is identical on both ranks
    assert len(rank0["snapshots"]) == len(rank1["snapshots"]) == 12
    for index, (mine, theirs) in enumerate(zip(rank0["snapshots"], rank1["snapshots"])):
        for key, value in mine.items():
            assert torch.equal(value, theirs[key]), f"{key} differs between ranks after half-step {index}"
    # 2. row-wise: each of the 1024 rows lives on exactly one rank, half the table on each
    assert sorted(rank0["rows"] + rank1["rows"]) == [(0, 512), (512, 512)]
    assert rank0["local_table_bytes"] == rank1["local_table_bytes"] == 512 * 16 * 4
    # 3. the generator half-step wrote nothing into the reranker: rows, Adagrad state, dense weights
    assert rank0["untouched"] == rank1["untouched"] == [True] * 6
    moved = [k for k, v in rank0["generator"].items() if not torch.equal(v, rank0["generator_start"][k])]
    assert moved, "the generator never learned: the adversarial half-step did not run"


def _train_worker_pids(session_dir: str) -> list[int]:
    """Ray Train worker processes of OUR Ray (their parent raylet runs in our session dir):
    other Ray instances on the machine must not be touched."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not (entry / "cmdline").read_bytes().startswith(b"ray::RayTrainWorker"):
                continue
            ppid = next(line.split()[1] for line in (entry / "status").read_text().splitlines()
                        if line.startswith("PPid:"))
            if session_dir.encode() in Path(f"/proc/{ppid}/cmdline").read_bytes():
                pids.append(int(entry.name))
        except (OSError, StopIteration):
            continue
    return pids


class _Killer:
    """SIGKILLs one Train worker of our Ray each time a new checkpoint of the run is registered,
    ``kills`` times, while fewer than ``before_step`` steps are done: a lost node, mid-epoch."""

    def __init__(self, ray_cluster, checkpoints: Path, before_step: int, kills: int = 1):
        self.session_dir = ray_cluster._private.worker._global_node.get_session_dir_path()
        self.checkpoints, self.before_step, self.kills = checkpoints, before_step, kills
        self.killed_at: list[int] = []
        self.stop = False
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join(timeout=1)

    def registered(self) -> dict[str, int]:
        """global_step of each checkpoint the controller has registered (its snapshot is written
        once a checkpoint is registered, not just uploaded), by directory name."""
        steps = {}
        for snapshot in self.checkpoints.glob("*/checkpoint_manager_snapshot.json"):
            try:
                results = json.loads(snapshot.read_text())["checkpoint_results"]
            except (OSError, ValueError, KeyError):
                continue  # being rewritten
            for entry in results:
                steps[entry["checkpoint_dir_name"]] = entry["metrics"]["global_step"]
        return steps

    def _watch(self):
        earlier = set(self.registered())  # checkpoints of earlier attempts or kills do not count
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and len(self.killed_at) < self.kills and not self.stop:
            new = {name: step for name, step in self.registered().items() if name not in earlier}
            workers = _train_worker_pids(self.session_dir)
            if new and max(new.values()) < self.before_step and workers:
                os.kill(max(workers), signal.SIGKILL)
                self.killed_at.append(max(new.values()))
                earlier |= set(new)
            time.sleep(0.1)


def test_killed_workers_resume_from_checkpoints_on_the_same_and_on_another_worker_count(
        ray_cluster, local_lake):
    """A lost node mid-epoch, three ways. On 2 workers with a retry left, Ray Train restarts the
    worker group and the run resumes its own checkpoint with no step lost or repeated. The
    second loss fails the run (no retries left) and the scheduler resubmits the day on the
    workers it has: 1, killed again, then 2. Each resubmission resumes the run's last checkpoint
    with the table resharded onto the new count (2 -> 1, 1 -> 2), and the epoch trains every
    request of the window (a few again, never fewer: the skip is by count, ``loop.resume_skip``).
    Validation runs throughout (a 10% hold-out, every 4 steps, never stopping): every attempt
    keeps the curve it resumed, and the registered checkpoint is the best-scored one."""
    add_days(local_lake, 0, 2, rows=1024)  # trains on day 0 (the newest is the day it serves)
    held = int(holdout_mask(make_requests(WORLD, DAY0, np.arange(1024))["request_id"], 0.1).sum())
    trained = 1024 - held
    base = TINY + NO_REPLAY + ["train.checkpoint_every_steps=2", "validation.fraction=0.1",
                               "validation.every_steps=4", "validation.patience=0"]
    checkpoints = Path(local_lake.uri("checkpoints"))
    on = {n: load_config(None, base + [f"train.num_workers={n}", f"train.max_failures={n - 1}"])
          for n in (1, 2)}
    batch = on[1].data.batch_size
    for workers, kills in ((2, 2), (1, 1)):
        with _Killer(ray_cluster, checkpoints, steps_per_epoch(trained, on[workers]) - 2, kills) as killer:
            with pytest.raises(TrainingFailedError):
                run_daily(local_lake, on[workers], verbose=False)
        assert len(killer.killed_at) == kills, f"the {workers}-worker attempt was killed {killer.killed_at}"
        if workers == 2:
            # after the in-run restart on the same count: exactly the steps' requests, no more
            restarted = [ckpt.TrainingProgress.from_json(p.read_text())
                         for p in checkpoints.glob(f"*/checkpoint_*/{ckpt.PROGRESS_FILE}")]
            restarted = [r for r in restarted if r.restarts == 1]
            assert restarted, "no checkpoint was written after the in-run restart"
            assert all(r.requests_in_epoch == r.step_in_epoch * 2 * batch for r in restarted)
    assert not Registry(local_lake).versions(), "a failed attempt registered a version"

    result = run_daily(local_lake, on[2], verbose=False)
    assert result.status == "trained" and result.rows_holdout == held
    metrics = result.metrics
    curve = metrics["valid/curve"]
    steps = [step for step, _ in curve]
    assert steps == sorted(set(steps)), f"an attempt evaluated a step twice or lost the curve: {steps}"
    progress = ckpt.load(result.checkpoint_uri).progress
    # the registered checkpoint is the best-scored one; the run's own counters are on the last
    best_step, best = max(curve[1:], key=lambda point: point[1])
    assert (progress.global_step, metrics["valid/registered"]) == (best_step, pytest.approx(best))
    # the epoch trained every request (less the one the equal split across 2 workers may drop):
    # 2 -> 1 trains again under 1 x 64 requests, 1 -> 2 under 2 x 64
    assert trained - 1 <= metrics["train/requests_epoch"] < trained + 3 * batch
    assert metrics["train/last_global_step"] > steps_per_epoch(trained, on[2])  # every attempt's steps
    # the interrupted attempts' checkpoints are gone once the version is registered
    assert [p for p in Path(result.checkpoint_uri).parent.glob("checkpoint_*") if p.is_dir()] == [
        Path(result.checkpoint_uri)]


def _day_files(lake: Lake, d: int) -> set[str]:
    """``bucket/key`` of the request_logs files of day ``d``, from the Delta log."""
    table = DeltaTable(lake.table_uri("request_logs"), storage_options=lake.storage_options())
    return {lake.fs_path(uri) for uri in table.file_uris(file_pruning_predicate=[("ds", "=", ds(d))])}


@pytest.mark.s3
def test_two_days_in_a_row_on_s3(ray_cluster, s3_server, s3_lake, tmp_path):
    """The daily run is incremental and idempotent, on S3: checkpoints, registry, replay reports
    and TensorBoard events all in the bucket; re-running a day trains nothing; the second day
    warm-starts from the first and fetches only the new day's files from the bucket. (The local
    lake path runs end to end in tests/e2e/test_train_daily_job.py.)"""
    import pyarrow.fs as pafs

    cfg = load_config(None, TINY + LENIENT_GATE)
    # day 0 on one worker (the whole table there), day 1 on two: the warm start reshards 1 -> 2
    one_worker = load_config(None, TINY + LENIENT_GATE + ["train.num_workers=1"])
    data_files = s3_lake.fs_path(s3_lake.table_uri("request_logs")) + "/ds="  # not the Delta log
    add_days(s3_lake, 0, 2)
    mark = s3_server.log_offset()
    first = run_daily(s3_lake, one_worker, verbose=False)  # trains on day 0, replays day 1
    assert first.status == "trained" and first.window == (ds(0), ds(0))
    assert first.checkpoint_uri.startswith(s3_lake.uri("checkpoints"))
    assert s3_server.objects_read(data_files, since=mark) == _day_files(s3_lake, 0) | _day_files(s3_lake, 1)
    # the replay actors fetched the checkpoint from the bucket; report and decision are there too
    assert first.registry_action == "promoted" and first.replay_report_uri.startswith("s3://")
    with s3_lake.filesystem().open_input_stream(s3_lake.fs_path(first.replay_report_uri + "/report.md")) as f:
        assert b"Decision: PROMOTE" in f.read()
    assert Registry(s3_lake).get(first.version).checkpoint_uri == first.checkpoint_uri
    loaded = ckpt.load(ckpt.fetch(first.checkpoint_uri, s3_lake))
    assert loaded.progress.global_step == first.global_step and loaded.progress.watermark == ds(0)
    events = s3_lake.filesystem().get_file_info(pafs.FileSelector(
        s3_lake.fs_path(s3_lake.uri("tensorboard", first.run_name))))
    assert any("tfevents" in info.path for info in events)

    again = run_daily(s3_lake, one_worker, verbose=False)  # same day again: the parent is up to date
    assert again.status == "up_to_date" and len(Registry(s3_lake).versions()) == 1

    add_days(s3_lake, 2, 1)
    mark = s3_server.log_offset()
    second = run_daily(s3_lake, cfg, verbose=False)  # trains on day 1 from the first, replays day 2
    assert second.status == "trained" and second.parent_version == first.version
    assert second.window == (ds(1), ds(1)) and second.rows_read == 256
    # what was fetched from the bucket: day 1 to train on, day 2 to replay; day 0 not a byte
    day0, day1, day2 = (_day_files(s3_lake, d) for d in range(3))
    assert day0 and s3_server.objects_read(data_files, since=mark) == day1 | day2
    assert second.global_step == first.global_step + steps_per_epoch(256, cfg)  # warm start continues
    loaded = ckpt.load(ckpt.fetch(second.checkpoint_uri, s3_lake))  # weights_only: tensors and JSON
    assert loaded.lineage["parent_version"] == first.version and loaded.lineage["window_start"] == ds(1)
    assert loaded.progress.global_step == second.global_step
    assert loaded.progress.watermark == ds(1) and len(loaded.progress.history) == 2
    assert {"reranker", "reranker_opt", "reranker_table_opt", "generator", "generator_opt"} <= loaded.parts
    assert len(s3_lake.filesystem().get_file_info(pafs.FileSelector(
        s3_lake.fs_path(second.checkpoint_uri + "/model")))) == 3  # .metadata + one part per worker

    rows = Registry(s3_lake).versions("dnr")
    assert [r.status for r in rows] == ["retired", "production"]
    assert rows[1].table_version == 2  # one commit per day
    assert json.loads(rows[1].config_json)["model"]["d_model"] == 16
    reports = sorted(DeltaTable(s3_lake.table_uri("replay_reports"), storage_options=s3_lake.storage_options())
                     .to_pyarrow_table().to_pylist(), key=lambda r: r["created_at"])
    assert [(r["ds"], r["candidate_version"], r["baseline_version"], r["decision"]) for r in reports] == [
        (ds(1), first.version, None, "promote"), (ds(2), second.version, first.version, "promote")]
    assert all(r["requests_evaluated"] + r["rows_quarantined"] == 256 for r in reports)
    with s3_lake.filesystem().open_input_stream(s3_lake.fs_path(second.replay_report_uri + "/report.md")) as f:
        assert b"| baseline |" in f.read()  # the production model was scored beside the candidate
    local_events = tmp_path / "tensorboard"
    local_events.mkdir()
    pafs.copy_files(s3_lake.fs_path(s3_lake.uri("tensorboard", second.run_name)), str(local_events),
                    source_filesystem=s3_lake.filesystem(), destination_filesystem=pafs.LocalFileSystem())
    assert list(local_events.glob("events.out.tfevents.*")), "rank 0 wrote no TensorBoard events"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(local_events)).Reload().Tags()
    assert {"train/loss_direct", "train/loss_z", "train/requests_per_s", "train/lr",
            "data/rows_read", "data/rows_quarantined", "diag/auc_real", "diag/auc_synthetic",
            "diag/grad_norm_direct", "diag/grad_norm_z", "diag/lambda_c"} <= set(tags["scalars"])
    assert {"scores/real", "scores/synthetic", "scores/real_quantile", "scores/synthetic_quantile"} <= set(
        tags["histograms"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (NCCL + bf16 path)")
def test_daily_run_on_gpu_with_bf16(ray_cluster, local_lake):
    add_days(local_lake, 0, 2)
    cfg = load_config(None, TINY + LENIENT_GATE + ["train.use_gpu=true", "train.bf16=true",
                                                   "train.num_workers=1"])
    result = run_daily(local_lake, cfg, verbose=False)
    assert result.status == "trained" and result.global_step == steps_per_epoch(256, cfg)
    assert all(np.isfinite(v) for k, v in result.metrics.items() if k.startswith("train/loss"))


def test_a_worker_count_the_ray_cannot_place_is_refused_before_anything_runs(ray_cluster, local_lake):
    from dnr.lease import LakeLease

    add_days(local_lake, 0, 2)
    cfg = load_config(None, TINY + ["train.num_workers=8"])
    with pytest.raises(ValueError, match=r"train.num_workers=8 .* needs CPU 9 \(the Ray has 6\).*--num-cpus"):
        run_daily(local_lake, cfg, verbose=False)
    assert not Path(local_lake.uri("checkpoints")).exists()  # nothing started
    assert LakeLease.read(local_lake, "train_daily/dnr").released_at is not None
