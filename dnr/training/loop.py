"""The Ray Train worker loop: ``for batch: step -> maybe_log -> maybe_checkpoint``.

Runs on every worker of a ``TorchTrainer``. The models are built without their item tables,
then distributed in one place (:func:`dnr.training.sharding.distribute`): item tables sharded
across the workers, dense parameters in DDP, so every half-step all-reduces the gradients of the
model it updates and the dense parameters stay identical on all ranks. Every rank writes its
part of each checkpoint and calls ``ray.train.report``; rank 0 writes TensorBoard. The state is
loaded after the sharding, so a checkpoint of any number of workers loads onto this run's
(resharding). Where the run starts from, in order:
``ray.train.get_checkpoint()`` (a retried worker group or a same-day re-run resumes), else the
parent version's checkpoint (daily warm start), else fresh weights (cold start).
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
import time
from dataclasses import replace

import torch
import torch.distributed as dist
from ray.data.collate_fn import ArrowBatchCollateFn

from dnr.config import DataConfig, JobConfig, config_from_dict, config_to_json
from dnr.data.batch import RerankBatch
from dnr.data.collate import collate
from dnr.models import synthesize_scores
from dnr.storage import Lake
from dnr.training import checkpoint as ckpt
from dnr.training.metrics_log import TensorBoardLogger
from dnr.training.progress import WorkerProgress
from dnr.training.sharding import distribute
from dnr.training.step import (TrainParts, build_train_parts, reranker_context, train_step,
                               training_phase)


class RerankCollate(ArrowBatchCollateFn):
    """Ray Data collate: runs in the data pipeline's prefetch threads, not in the step."""

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg

    def __call__(self, batch) -> RerankBatch:
        return collate(batch, self.cfg)


def _start(parts: TrainParts, loop_cfg: dict, cfg: JobConfig, lake: Lake) -> ckpt.TrainingProgress:
    """Load the state to start from into the distributed parts (collective: every rank loads
    its own rows); returns the progress record of this run."""
    import ray.train

    run_name = loop_cfg["run_name"]
    resumed = ray.train.get_checkpoint()
    if resumed is not None:
        with resumed.as_directory() as directory:
            loaded = ckpt.load(directory)
            if loaded.progress.run_name == run_name:
                ckpt.restore(parts, loaded)
                loaded.progress.restarts += 1
                return loaded.progress
    if loop_cfg.get("parent_checkpoint"):
        loaded = ckpt.load(ckpt.fetch(loop_cfg["parent_checkpoint"], lake))
        ckpt.restore(parts, loaded)
        return replace(loaded.progress, run_name=run_name, epoch=0, step_in_epoch=0,
                       requests_in_epoch=0, seed=cfg.train.seed, restarts=0)
    return ckpt.TrainingProgress(run_name=run_name, seed=cfg.train.seed)


def resume_skip(progress: ckpt.TrainingProgress, workers: int, batch_size: int) -> int:
    """Batches each worker skips at the start of a resumed epoch. On the worker count that wrote
    the checkpoint, the steps already done; on another count (a node lost, the day resubmitted
    on fewer workers, or more), the whole batches of this many workers that fit in the requests
    already trained. The skip is by count (as on the same count: the split of the rows between
    workers is Ray Data's), so the epoch trains at most ``workers * batch_size - 1`` requests more
    than the window holds, never fewer; ``requests_seen`` counts them."""
    if progress.num_workers in (0, workers) or progress.step_in_epoch == 0:
        return progress.step_in_epoch
    return progress.requests_in_epoch // (workers * batch_size)


def _seed(progress: ckpt.TrainingProgress, rank: int) -> None:
    digest = hashlib.sha256(f"{progress.seed}/{rank}/{progress.global_step}".encode()).digest()
    torch.manual_seed(int.from_bytes(digest[:8], "little") % (2**63))


def _all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(values)
    return values


def _global_count(local: int) -> int:
    return int(_all_reduce_sum(torch.tensor([local], dtype=torch.int64)).item())


class _Meter:
    """Loss sums and counts since the last log; averaged globally (never an average of averages)."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.steps = 0
        self.requests = 0
        self.since = time.monotonic()

    def add(self, terms: dict[str, float], requests: int) -> None:
        for key, value in terms.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1
        self.steps += 1
        self.requests += requests

    def reduce(self) -> tuple[dict[str, float], float]:
        """Global mean of each loss term over steps and ranks, and global requests/s."""
        packed = torch.tensor([self.sums.get(k, 0.0) for k in LOSS_KEYS]
                              + [self.counts.get(k, 0) for k in LOSS_KEYS] + [self.requests],
                              dtype=torch.float64)
        packed = _all_reduce_sum(packed)
        n = len(LOSS_KEYS)
        means = {k: packed[i].item() / packed[n + i].item() for i, k in enumerate(LOSS_KEYS)
                 if packed[n + i].item() > 0}
        rate = packed[-1].item() / max(time.monotonic() - self.since, 1e-9)
        self.__init__()
        return means, rate


LOSS_KEYS = ["train/loss_direct", "train/loss_z", "train/loss_theta", "train/loss_adv",
             "train/loss_x", "train/loss_phi", "train/loss_cumulative", "train/loss_increment",
             "train/loss_eval", "train/loss_distill", "train/loss_beam", "train/mined_value"]


def train_loop_per_worker(loop_cfg: dict) -> None:
    """Entry point given to ``TorchTrainer``; ``loop_cfg`` is plain JSON-able data."""
    import ray.train
    import ray.train.torch

    cfg = config_from_dict(loop_cfg["config"])
    lake = Lake(loop_cfg["lake"])
    context = ray.train.get_context()
    rank = context.get_world_rank()
    device = ray.train.torch.get_device()
    if not cfg.train.use_gpu:
        torch.set_num_threads(max(1, int(cfg.train.cpus_per_worker)))

    # tables on meta: no worker allocates a whole table, the sharding materialises its rows
    parts = build_train_parts(cfg.model, cfg.data, cfg.dnr, cfg.optim, cfg.degre, table_device="meta")
    parts = distribute(parts, device, cfg.train, cfg.optim)
    progress = _start(parts, loop_cfg, cfg, lake)
    progress.step_in_epoch = resume_skip(progress, context.get_world_size(), cfg.data.batch_size)
    progress.num_workers = context.get_world_size()
    _seed(progress, rank)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                if cfg.train.use_gpu and cfg.train.bf16 else contextlib.nullcontext())

    logger = TensorBoardLogger(lake, loop_cfg["run_name"]) if rank == 0 else None
    if logger is not None:
        lineage = loop_cfg["lineage"]
        logger.log(progress.global_step, {"data/rows_read": lineage["rows_read"],
                                          "data/rows_quarantined": lineage["rows_quarantined"]})
    console = WorkerProgress(loop_cfg.get("steps_per_epoch", 0) * cfg.train.epochs or None,
                             board=loop_cfg.get("progress_board") if rank == 0 else None)
    shard = ray.train.get_dataset_shard("train")
    meter, steps_this_run = _Meter(), 0
    config_json = config_to_json(cfg)

    checkpoint_s = [0.0]  # this attempt's time writing checkpoints (rank 0; uploads not counted)

    def report(metrics: dict, with_checkpoint: bool) -> None:
        metrics = {**metrics, "global_step": progress.global_step, "epoch": progress.epoch}
        if not with_checkpoint:
            ray.train.report(metrics)
            return
        started = time.monotonic()
        with tempfile.TemporaryDirectory() as tmp:
            # every rank writes its rows of the tables; Ray Train gathers the parts into one checkpoint
            lineage = {**loop_cfg["lineage"], "global_step": progress.global_step}
            ckpt.save(tmp, parts, progress, config_json, lineage, rank=rank)
            if logger is not None:
                logger.sync()
            checkpoint_s[0] += time.monotonic() - started
            ray.train.report({**metrics, "time/checkpoint_s": checkpoint_s[0]},
                             checkpoint=ray.train.Checkpoint.from_directory(tmp))

    last_means: dict[str, float] = {}
    for _ in range(progress.epoch, cfg.train.epochs):
        skip, epoch_requests = progress.step_in_epoch, 0  # local, since this attempt's epoch start
        batches = shard.iter_torch_batches(batch_size=cfg.data.batch_size,
                                           collate_fn=RerankCollate(cfg.data), prefetch_batches=2)
        for index, batch in enumerate(batches):
            if index < skip:  # a resumed epoch: these batches were trained before the failure
                continue
            if cfg.train.max_steps and steps_this_run >= cfg.train.max_steps:
                break
            batch = batch.to(device, non_blocking=True)
            with autocast:
                terms = train_step(batch, parts, progress.global_step, cfg.model, cfg.dnr, cfg.optim,
                                   cfg.degre)
            progress.global_step += 1
            progress.step_in_epoch += 1
            steps_this_run += 1
            epoch_requests += batch.num_requests
            meter.add(terms, batch.num_requests)
            progress.phase = training_phase(cfg.model, cfg.dnr, progress.global_step)
            if progress.global_step % cfg.train.log_every_steps == 0:
                last_means = _log(meter, logger, console, parts, batch, progress, cfg,
                                  steps_this_run, rank)
            if cfg.train.checkpoint_every_steps and \
                    progress.global_step % cfg.train.checkpoint_every_steps == 0:
                # every rank is here at the same step, so the collective is safe
                progress.requests_in_epoch += _global_count(epoch_requests)
                epoch_requests = 0
                report(last_means, with_checkpoint=True)
        seen = progress.requests_in_epoch + _global_count(epoch_requests)
        progress.requests_seen += seen
        progress.requests_in_epoch = 0
        progress.epoch += 1
        progress.step_in_epoch = 0
        if progress.epoch == cfg.train.epochs:  # the run is complete: move the data watermark
            lineage = loop_cfg["lineage"]
            progress.watermark = lineage["window_end"]
            progress.history.append({"run_name": progress.run_name, "steps": steps_this_run,
                                     "window_start": lineage["window_start"],
                                     "window_end": lineage["window_end"]})
        if meter.steps:
            last_means = _log(meter, logger, console, parts, None, progress, cfg, steps_this_run, rank)
        report({**last_means, "train/requests_epoch": seen}, with_checkpoint=True)
    if progress.epoch >= cfg.train.epochs and steps_this_run == 0:
        # nothing left to do (the run had already finished): hand back the final checkpoint again
        report(last_means, with_checkpoint=True)
    if logger is not None:
        logger.close()


def _log(meter: _Meter, logger, console: WorkerProgress, parts: TrainParts, batch, progress,
         cfg: JobConfig, steps_this_run: int, rank: int) -> dict[str, float]:
    means, rate = meter.reduce()
    generated = None
    if batch is not None and parts.heuristic is not None:
        # on every rank: the reranker's context is a lookup in the sharded table (a collective)
        noise = parts.generator if progress.phase == "adversarial" else parts.heuristic
        with torch.no_grad():
            context = reranker_context(parts.reranker, batch) if progress.phase == "adversarial" else None
            generated = synthesize_scores(noise, batch, context)
    if rank != 0:
        return means
    scalars = {**means, "train/requests_per_s": rate,
               "train/lr": parts.reranker_opt.param_groups[0]["lr"],
               "train/phase_adversarial": float(progress.phase == "adversarial")}
    if parts.generator_opt is not None:
        scalars["train/generator_lr"] = parts.generator_opt.param_groups[0]["lr"]
    if parts.evaluator_opt is not None:
        scalars["train/evaluator_lr"] = parts.evaluator_opt.param_groups[0]["lr"]
    logger.log(progress.global_step, scalars)
    if generated is not None:
        logger.histogram(progress.global_step, "scores/real", batch.scores[batch.label_mask])
        logger.histogram(progress.global_step, "scores/generated", generated[batch.label_mask])
    console.show(steps_this_run, progress.global_step, progress.epoch, means, rate)
    return means
