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
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist
from ray.data.collate_fn import ArrowBatchCollateFn

from dnr.config import DataConfig, JobConfig, config_to_json
from dnr.data.batch import RerankBatch
from dnr.data.collate import collate
from dnr.storage import Lake
from dnr.training import checkpoint as ckpt
from dnr.training.diagnostics import dnr_diagnostics
from dnr.training.metrics_log import TensorBoardLogger
from dnr.training.progress import WorkerProgress
from dnr.training.schedule import is_constant, lr_factor
from dnr.training.sharding import distribute
from dnr.training.step import TrainParts, family_step, recipe
from dnr.training.validation import Validation
from dnr.training.worker_spec import WorkerSpec


class RerankCollate(ArrowBatchCollateFn):
    """Ray Data collate: runs in the data pipeline's prefetch threads, not in the step."""

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg

    def __call__(self, batch) -> RerankBatch:
        return collate(batch, self.cfg)


def _start(parts: TrainParts, spec: WorkerSpec) -> ckpt.TrainingProgress:
    """Load the state to start from into the distributed parts (collective: every rank loads
    its own rows); returns the progress record of this run."""
    import ray.train

    resumed, seed = ray.train.get_checkpoint(), spec.config.train.seed
    if resumed is not None:
        with resumed.as_directory() as directory:
            loaded = ckpt.load(directory)
            if loaded.progress.run_name == spec.run_name:
                ckpt.restore(parts, loaded)
                loaded.progress.resume()
                return loaded.progress
    if spec.parent_checkpoint:
        loaded = ckpt.load(ckpt.fetch(spec.parent_checkpoint, Lake(spec.lake_root)))
        ckpt.restore(parts, loaded)
        return loaded.progress.warm_start(spec.run_name, seed)
    return ckpt.TrainingProgress(run_name=spec.run_name, seed=seed)


def distributed_parts(cfg: JobConfig, device: torch.device) -> TrainParts:
    """Fresh parts as every worker builds them: the item tables on ``meta`` (no worker allocates
    a whole table; the sharding materialises each worker's rows), then :func:`distribute`."""
    parts = recipe(cfg).build_parts(cfg, "meta")
    return distribute(parts, device, cfg.train, cfg.optim)


def device_batches(shard, data_cfg: DataConfig, device: torch.device):
    """A dataset shard's batches, collated in Ray Data's prefetch threads, on ``device``."""
    batches = shard.iter_torch_batches(batch_size=data_cfg.batch_size, collate_fn=RerankCollate(data_cfg),
                                       prefetch_batches=2)
    for batch in batches:
        yield batch.to(device, non_blocking=True)


def take_step(batch: RerankBatch, parts: TrainParts, global_step: int, cfg: JobConfig) -> dict[str, float]:
    """One :func:`~dnr.training.step.family_step` of ``cfg``'s family, under bf16 autocast on a GPU when asked."""
    bf16 = cfg.train.use_gpu and cfg.train.bf16
    with torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
        return family_step(batch, parts, global_step, cfg)


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


def fix_switch_step(spec: WorkerSpec, progress: ckpt.TrainingProgress) -> WorkerSpec:
    """The spec with ``dnr.lambda_e`` resolved to a lifetime step, recorded in ``progress``: an
    explicit ``dnr.lambda_e``, else the step the model's first run fixed, else (this is the first
    run) ``dnr.lambda_e_epochs`` epochs of this run. A warm start keeps its parent's switch, so
    a daily run that trains a smaller window does not move it."""
    dnr_cfg = spec.config.dnr
    switch = progress.fix_switch_step(dnr_cfg.lambda_e, dnr_cfg.switch_step(spec.steps_per_epoch))
    config = replace(spec.config, dnr=replace(dnr_cfg, lambda_e=switch))
    return replace(spec, config=config)


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
    """Loss sums and counts since the last log; averaged globally (never an average of averages).
    ``keys``: the loss keys of the run's family, in the same order on every rank."""

    def __init__(self, keys: tuple[str, ...]):
        self.keys = keys
        self._reset()

    def _reset(self) -> None:
        self.sums = dict.fromkeys(self.keys, 0.0)
        self.counts = dict.fromkeys(self.keys, 0)
        self.steps, self.requests, self.since = 0, 0, time.monotonic()

    def add(self, terms: dict[str, float], requests: int) -> None:
        for key, value in terms.items():
            self.sums[key] += value
            self.counts[key] += 1
        self.steps += 1
        self.requests += requests

    def reduce(self) -> tuple[dict[str, float], float]:
        """Global mean of each loss term over steps and ranks, and global requests/s."""
        n = len(self.keys)
        packed = _all_reduce_sum(torch.tensor([*self.sums.values(), *self.counts.values(), self.requests],
                                              dtype=torch.float64)).tolist()
        means = {k: packed[i] / packed[n + i] for i, k in enumerate(self.keys) if packed[n + i] > 0}
        rate = packed[-1] / max(time.monotonic() - self.since, 1e-9)
        self._reset()
        return means, rate


def train_loop_per_worker(loop_config: dict) -> None:
    """Entry point given to ``TorchTrainer``; ``loop_config`` is :meth:`WorkerSpec.loop_config`."""
    run = _Run.start(WorkerSpec.of(loop_config))
    log = StepLog(run)
    validation = Validation(run, log.logger, lambda shard: device_batches(shard, run.cfg.data, run.device))
    checkpoints = Checkpointer(run, log.logger, validation)
    epochs = run.cfg.train.epochs
    validation.maybe_evaluate()  # the starting point of the curve (the parent's weights)
    for _ in range(run.progress.epoch, epochs):
        epoch = EpochCount()
        for batch in run.batches():
            terms = run.step(batch)
            epoch.requests += batch.num_requests
            log.maybe_log(terms, batch)
            improved = validation.maybe_evaluate()
            checkpoints.maybe_checkpoint(epoch, log.last, force=improved)
            if run.progress.stopped_early:
                break
        seen = run.end_epoch(epoch)
        log.flush()
        validation.maybe_evaluate(epoch_end=True)
        if run.progress.stopped_early and run.progress.epoch < epochs:
            run.complete()
        checkpoints.report({**log.last, "train/requests_epoch": seen})
        if run.progress.stopped_early:
            break
    if run.progress.epoch >= epochs and run.steps_this_run == 0:
        # nothing left to do (the run had already finished): hand back the final checkpoint again
        checkpoints.report(log.last)
    log.close()


@dataclass
class EpochCount:
    """Requests this rank trained in the current epoch since this attempt's last checkpoint."""

    requests: int = 0

    def take_global(self) -> int:
        """The requests of every rank since the last call (a collective), and reset."""
        count, self.requests = _global_count(self.requests), 0
        return count


@dataclass
class _Run:
    """One worker's state through a run: the spec, the distributed parts, the progress record."""

    spec: WorkerSpec
    rank: int
    world: int
    device: torch.device
    parts: TrainParts
    progress: ckpt.TrainingProgress
    shard: object
    steps_this_run: int = 0

    @property
    def cfg(self) -> JobConfig:
        return self.spec.config

    @classmethod
    def start(cls, spec: WorkerSpec) -> _Run:
        import ray.train
        import ray.train.torch

        cfg, context = spec.config, ray.train.get_context()
        device = ray.train.torch.get_device()
        if not cfg.train.use_gpu:
            torch.set_num_threads(max(1, int(cfg.train.cpus_per_worker)))
        parts = distributed_parts(cfg, device)
        progress = _start(parts, spec)
        spec = fix_switch_step(spec, progress)
        progress.start_attempt(context.get_world_size(),
                               skip=resume_skip(progress, context.get_world_size(), cfg.data.batch_size))
        _seed(progress, context.get_world_rank())
        return cls(spec, context.get_world_rank(), context.get_world_size(), device, parts, progress,
                   ray.train.get_dataset_shard("train"))

    def batches(self):
        """This epoch's batches on the device: a resumed epoch's trained ones skipped, and no
        more than ``train.max_steps`` steps in this attempt."""
        cfg, skip = self.cfg, self.progress.step_in_epoch
        for index, batch in enumerate(device_batches(self.shard, cfg.data, self.device)):
            if index < skip:  # a resumed epoch: these batches were trained before the failure
                continue
            if cfg.train.max_steps and self.steps_this_run >= cfg.train.max_steps:
                break
            yield batch

    def step(self, batch: RerankBatch) -> dict[str, float]:
        progress, cfg = self.progress, self.cfg
        if not is_constant(cfg.optim):
            factor = lr_factor(self.run_step, self.spec.steps_per_epoch * cfg.train.epochs, cfg.optim)
            for opt in (self.parts.reranker_opt, self.parts.generator_opt, self.parts.evaluator_opt):
                if opt is not None:
                    opt.scale_lr(factor)
        terms = take_step(batch, self.parts, progress.global_step, cfg)
        progress.advance(recipe(cfg).phase(cfg, progress.global_step + 1))
        self.steps_this_run += 1
        return terms

    @property
    def run_step(self) -> int:
        """Steps of this run done (the learning rate's and every cadence's counter)."""
        return self.progress.run_step(self.spec.steps_per_epoch)

    def end_epoch(self, epoch: EpochCount) -> int:
        """Close the epoch in the progress record (the watermark moves after the last one);
        returns the requests every rank trained in it."""
        seen = self.progress.end_epoch(epoch.take_global())
        if self.progress.epoch == self.cfg.train.epochs:
            self.complete()
        return seen

    def complete(self) -> None:
        """Mark the run complete (its last epoch ended, or validation stopped it): the data
        watermark moves to the window's end and a re-run has nothing left to train."""
        lineage = self.spec.lineage
        self.progress.complete(self.cfg.train.epochs, lineage.window_start, lineage.window_end, self.steps_this_run)


class Checkpointer:
    """Writes this rank's part of a checkpoint and reports it to Ray Train every
    ``train.checkpoint_every_steps`` steps, and at the end of each epoch."""

    def __init__(self, run: _Run, logger: TensorBoardLogger | None, validation: Validation):
        self.run, self.every = run, run.cfg.train.checkpoint_every_steps
        self.validation = validation
        self.logger = logger  # rank 0's TensorBoard writer, synced to the lake with each checkpoint
        self.config_json = config_to_json(run.cfg)
        self.seconds = 0.0  # this attempt's time writing checkpoints (rank 0; uploads not counted)

    def maybe_checkpoint(self, epoch: EpochCount, metrics: dict[str, float], force: bool = False) -> None:
        """Checkpoint when due, or when ``force`` (validation improved: a candidate for "best")."""
        if force or (self.every and self.run.run_step % self.every == 0):
            # every rank is here at the same step, so the collective is safe
            self.run.progress.count_requests(epoch.take_global())
            self.report(metrics)

    def report(self, metrics: dict[str, float]) -> None:
        import ray.train

        run, started = self.run, time.monotonic()
        metrics = {**metrics, "global_step": run.progress.global_step, "epoch": run.progress.epoch,
                   **self.validation.report_metrics()}
        with tempfile.TemporaryDirectory() as tmp:
            # every rank writes its rows of the tables; Ray Train gathers the parts into one checkpoint
            lineage = {**run.spec.lineage.as_dict(), "global_step": run.progress.global_step}
            ckpt.save(tmp, run.parts, run.progress, self.config_json, lineage, rank=run.rank)
            if self.logger is not None:
                self.logger.sync()
            self.seconds += time.monotonic() - started
            ray.train.report({**metrics, "time/checkpoint_s": self.seconds},
                             checkpoint=ray.train.Checkpoint.from_directory(tmp))


class StepLog:
    """Loss terms and requests/s, reduced over the ranks every ``train.log_every_steps`` steps
    and at the end of each epoch; rank 0 writes them to TensorBoard and posts them to the
    driver's progress board."""

    def __init__(self, run: _Run):
        self.run, self.every = run, run.cfg.train.log_every_steps
        self.meter = _Meter(recipe(run.cfg).loss_keys)
        self.last: dict[str, float] = {}
        self.logger = TensorBoardLogger(Lake(run.spec.lake_root), run.spec.run_name) if run.rank == 0 else None
        if self.logger is not None:
            self.logger.log(run.progress.global_step, {"data/rows_read": run.spec.lineage.rows_read,
                                                       "data/rows_quarantined": run.spec.lineage.rows_quarantined})
        total = run.spec.steps_per_epoch * run.cfg.train.epochs
        total = min(total, run.cfg.train.max_steps or total) or None
        self.console = WorkerProgress(total, board=run.spec.progress_board if run.rank == 0 else None)

    def maybe_log(self, terms: dict[str, float], batch: RerankBatch) -> None:
        """Count this step's terms; write when the step is due."""
        self.meter.add(terms, batch.num_requests)
        if self.run.run_step % self.every == 0:
            self._write(batch)

    def flush(self) -> None:
        if self.meter.steps:
            self._write(None)

    def close(self) -> None:
        if self.logger is not None:
            self.logger.close()

    def _write(self, batch: RerankBatch | None) -> None:
        run, progress = self.run, self.run.progress
        means, rate = self.meter.reduce()
        self.last = means
        # on every rank: the diagnostics look the batch up in the sharded table (a collective)
        diagnosis = dnr_diagnostics(run.parts, batch, progress.phase, run.cfg.dnr) if batch is not None else None
        if self.logger is None:
            return
        self.logger.log(progress.global_step, {**means, "train/requests_per_s": rate, **_rates(run.parts),
                                               "train/phase_adversarial": float(progress.phase == "adversarial")})
        if diagnosis is not None:
            self.logger.log(progress.global_step, diagnosis.scalars)
            for key, values in diagnosis.histograms.items():
                self.logger.histogram(progress.global_step, key, values)
        self.console.show(run.steps_this_run, progress.global_step, progress.epoch, means, rate)


def _rates(parts: TrainParts) -> dict[str, float]:
    """The learning rates of the optimizers the run has."""
    rates = {"train/lr": parts.reranker_opt.param_groups[0]["lr"]}
    if parts.generator_opt is not None:
        rates["train/generator_lr"] = parts.generator_opt.param_groups[0]["lr"]
    if parts.evaluator_opt is not None:
        rates["train/evaluator_lr"] = parts.evaluator_opt.param_groups[0]["lr"]
    return rates
