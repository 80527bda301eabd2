"""Ranking quality of DNR against its baselines: one command per dataset, in-process PyTorch.

    python bench/quality.py --dataset synthetic --seeds 0 1 2
    python bench/quality.py --dataset ml-latest-small \
        --ratings ../shared/data/ml-latest-small/ratings.csv --seeds 0 1 2 3 4
    python bench/quality.py --lake s3://bucket/lake --eval-ds 2024-01-05 --seeds 0 1 2

No Ray: this measures the method, not the system. Each dataset is split by time: rerankers
train on the earlier days and are evaluated on later held-out day(s). ``--split valid`` instead
holds out the last *training* day(s) and never touches the test days: tune with it. ``--lake``
runs the same rows on any ``request_logs`` table (local path or s3://): evaluated on the day
``--eval-ds``, trained on ``--train-days`` (default: every ds before it); only those days'
files are read.

Every trained row gets the same budget (steps, batch size, learning rate, data order) from the
dataset's preset; a seed fixes the model initialisation, the training order and the noise draws.
Rows: the retriever order (no training), PRM with each naive score mode, DNR-G, DNR-B, three
ablations of DNR-B, the DeGRe rows (evaluator-only greedy, the generator distilled from
beam-mined dense targets, the generator without dense supervision) and on synthetic data the
oracle order from ``true_click_prob`` where the evaluation day has it. ``--rows`` picks a subset
and ``--tag`` names its files.

Writes ``bench/results/quality_<dataset>.md`` (``quality_lake_<eval-ds>.md`` for a lake: mean ±
std over seeds, each row's N@6 relative to the retriever order, paired bootstraps of the N@6
differences over the evaluation requests, and the cost of each trained row: training time per
step, inference time per request, DeGRe's mining time per request) and the ``.json`` next to it
(per-seed numbers and the intervals).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime as dt
import itertools
import json
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import torch

from dnr.config import (SCORE_MODES, DataConfig, DeGReConfig, DNRConfig, ModelConfig, OptimConfig, ValidationConfig,
                        load_config)
from dnr.data.arrow_lists import flat_values, list_layout
from dnr.data.batch import RerankBatch
from dnr.data.collate import collate
from dnr.data.validate import SchemaError, check_schema, hash_request_ids, holdout_mask
from dnr.data.validate import split as validate_split
from dnr.evaluation.bootstrap import DeltaInterval, PairedBootstrap, poisson_weights
from dnr.evaluation.metrics import MetricAccumulator, per_request_metrics
from dnr.models.degre_search import evaluator_ranking
from dnr.schemas import REQUEST_LOGS
from dnr.storage import Lake
from dnr.training.schedule import is_constant, lr_factor
from dnr.training.step import TrainParts, build_train_parts, mine, train_step
from dnr.training.wrappers import evaluating

C = REQUEST_LOGS.col
K = 6
METRICS = (f"H@{K}", f"N@{K}", f"M@{K}", f"F1@{K}", "AUC")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPLICATES, CONFIDENCE = 2000, 0.95
"""The paired bootstrap of the N@K differences: Poisson replicates and interval coverage."""


# ------------------------------------------------------------------------------------ the rows


DNR_BASE = "<dnr base>"
"""A DNR row's score mode placeholder: the run's ``--dnr-mode`` (BenchConfig.dnr_mode)."""


@dataclass(frozen=True)
class Row:
    """One line of the table: a fixed ranking (``scorer``) or a reranker trained with a score mode."""

    name: str
    scorer: str = "model"
    """retriever (score = retriever score), oracle (score = true_click_prob), model (the served
    model) or evaluator (the DeGRe evaluator decoding greedily, from the same training run)."""
    score_mode: str = ""
    """The reranker's ``model.score_mode`` (model rows only)."""
    dnr: tuple[tuple[str, object], ...] = ()
    """``DNRConfig`` fields this row overrides on top of the preset's."""
    family: str = "prm"
    """``model.family``: prm or degre."""
    degre: tuple[tuple[str, object], ...] = ()
    """``DeGReConfig`` fields this row overrides on top of the preset's."""

    @property
    def training(self) -> tuple:
        """Rows with the same key share one training run per seed (evaluator vs generator rows)."""
        return (self.family, self.score_mode, self.dnr, self.degre)


NAIVE = (("enabled", False),)
"""The naive score modes: the same reranker trained with plain BCE (no DNR objectives)."""

ROWS: tuple[Row, ...] = (
    Row("retriever order", scorer="retriever"),
    Row("PRM none", score_mode="none", dnr=NAIVE),
    Row("PRM concat", score_mode="concat", dnr=NAIVE),
    Row("PRM add", score_mode="add", dnr=NAIVE),
    Row("PRM weight", score_mode="weight", dnr=NAIVE),
    Row("PRM denoise", score_mode="denoise", dnr=NAIVE),
    # DNR rows train the DNR objectives on the base score mode ``--dnr-mode`` (default denoise).
    Row("DNR-G", score_mode=DNR_BASE, dnr=(("heuristic", "gaussian"),)),
    Row("DNR-B", score_mode=DNR_BASE, dnr=(("heuristic", "beta"),)),
    # The ablations are of DNR-B (the config's default heuristic).
    Row("DNR-B w/o L_adv", score_mode=DNR_BASE, dnr=(("heuristic", "beta"), ("use_adv", False))),
    Row("DNR-B w/o L_x", score_mode=DNR_BASE, dnr=(("heuristic", "beta"), ("use_lx", False))),
    Row("DNR-B heuristic only", score_mode=DNR_BASE,
        dnr=(("heuristic", "beta"), ("use_generator", False))),
    # The cheaper-step option (not the default): the synthetic copy for half of each batch.
    Row("DNR-B half synthetic", score_mode=DNR_BASE,
        dnr=(("heuristic", "beta"), ("synthetic_fraction", 0.5))),
    Row("DNR-B 0.3 synthetic", score_mode=DNR_BASE,
        dnr=(("heuristic", "beta"), ("synthetic_fraction", 0.3))),
    # DeGRe on the same backbone size, with score mode add (starts at the retriever order).
    # The first two rows share one training run.
    Row("DeGRe evaluator greedy", scorer="evaluator", family="degre", score_mode="add", dnr=NAIVE),
    Row("DeGRe generator", family="degre", score_mode="add", dnr=NAIVE),
    Row("DeGRe generator w/o dense", family="degre", score_mode="add", dnr=NAIVE, degre=(("dense", False),)),
    Row("oracle (true_click_prob)", scorer="oracle"),
)
ROW_BY_NAME = {row.name: row for row in ROWS}
NAIVE_ROWS = ("PRM concat", "PRM add", "PRM weight", "PRM denoise")
DNR_ROWS = ("DNR-G", "DNR-B")
ABLATION_ROWS = ("DNR-B w/o L_adv", "DNR-B w/o L_x", "DNR-B heuristic only")
DEGRE_ROWS = ("DeGRe evaluator greedy", "DeGRe generator", "DeGRe generator w/o dense")
BASELINE = "retriever order"
"""The row every other is measured against in the main table (no training: what is served today)."""


# ------------------------------------------------------------------------------------ presets


@dataclass(frozen=True)
class BenchConfig:
    """The training budget and model size shared by every trained row of one dataset."""

    data: DataConfig
    model: ModelConfig
    """Size of the reranker; ``score_mode`` is set per row."""
    dnr: DNRConfig
    """DNR objectives; ``lambda_e`` is replaced by ``switch_fraction`` of the steps."""
    optim: OptimConfig
    steps: int
    """Optimisation steps of every trained row (a fixed count, so that a setting tuned on the
    validation split, which has one training day less, transfers to the test split as is)."""
    switch_fraction: float
    """The model-based generator takes over after this fraction of the steps (lambda_e)."""
    degre: DeGReConfig = DeGReConfig(evaluator_d_model=64, evaluator_lr=1e-2)
    """DeGRe rows: K, beam, temperature and the evaluator (the generator is sized by ``model``)."""
    eval_batch_size: int = 512
    dnr_mode: str = "denoise"
    """The score mode the DNR rows train on (``--dnr-mode``)."""
    recipe: str = "fixed"
    """fixed: ``steps`` steps at a constant rate, the last weights scored. daily: the daily job's
    recipe (``--config``): up to ``max_epochs`` epochs with the config's warm-up and decay over
    them, a ``validation.fraction`` hold-out of the training days scored every
    ``validation.every_steps`` steps and at each epoch's end, the best weights kept, early stop
    after ``validation.patience`` evaluations without a gain; the switch at ``dnr.lambda_e_epochs``."""
    max_epochs: int = 0
    """daily recipe: the run's most epochs (the config's ``train.epochs``)."""
    validation: ValidationConfig = ValidationConfig()
    """daily recipe: the config's hold-out."""

    @property
    def lambda_e(self) -> int:
        return round(self.switch_fraction * self.steps)

    def epochs(self, train_requests: int) -> float:
        return self.steps * self.data.batch_size / train_requests

    def steps_per_epoch(self, train_requests: int) -> int:
        return train_requests // self.data.batch_size

    def total_steps(self, train_requests: int) -> int:
        """The planned steps of a trained row (the daily recipe may stop earlier)."""
        if self.recipe == "daily":
            return self.max_epochs * self.steps_per_epoch(train_requests)
        return self.steps

    def switch_step(self, train_requests: int) -> int:
        if self.recipe == "daily":
            return self.dnr.switch_step(self.steps_per_epoch(train_requests))
        return self.lambda_e


def daily_recipe(config: str | None, overrides: Sequence[str] = ()) -> BenchConfig:
    """The daily job's recipe from its YAML (``jobs/configs/public.yaml``): its model, DNR,
    optimizer, schedule, epochs and hold-out, and one in-process batch of ``data.batch_size x
    train.num_workers`` requests per step (what one step of its DDP workers averages over)."""
    job = load_config(config, overrides)
    data = dataclasses.replace(job.data, batch_size=job.data.batch_size * job.train.num_workers)
    return BenchConfig(data=data, model=job.model, dnr=job.dnr, optim=job.optim, steps=0, switch_fraction=0.0,
                       recipe="daily", max_epochs=job.train.epochs, validation=job.validation,
                       dnr_mode=job.model.score_mode)


@dataclass(frozen=True)
class SyntheticData:
    """The synthetic world and its days: ``train_days`` days then one test day."""

    world_seed: int = 0
    """Fixed across benchmark seeds: seeds vary the training, not the world."""
    num_items: int = 20_000
    """A catalogue the training budget can cover (the world's default 100k items would leave
    most candidate ids seen once or never in a CPU-sized run)."""
    train_days: int = 4
    requests_per_day: int = 3_200
    test_requests: int = 5_000
    start: dt.date = dt.date(2024, 1, 1)


@dataclass(frozen=True)
class PublicData:
    """MovieLens through ``dnr.data.public`` (the prepare_public job's defaults): the last
    ``test_days`` ds partitions are the test set, the ``test_days`` before them validation."""

    test_days: int = 6


DATASETS = ("synthetic", "ml-latest-small")
"""``--dataset``: the built-in data (``--lake`` is the alternative)."""

PRESETS: dict[str, BenchConfig] = {
    "synthetic": BenchConfig(
        data=DataConfig(max_list_len=50, history_len=30, num_buckets=1 << 15, batch_size=64),
        model=ModelConfig(d_model=64, n_layers=1, n_heads=2, ff_dim=128, dropout=0.0),
        dnr=DNRConfig(lambda_m=1.0, generator_hidden=64),
        # item tables: row-wise Adagrad lr 0.2, the best of 0.01-0.5 on the validation day (3 seeds)
        optim=OptimConfig(lr=1e-2, generator_lr=1e-2, embedding_lr=0.2),
        steps=400,
        switch_fraction=0.4,
    ),
    # ~870 training requests from a few dozen users: past ~40 steps at lr 3e-4 every trained
    # mode drifts away from what transfers to later days (chosen on the validation split).
    "ml-latest-small": BenchConfig(
        data=DataConfig(max_list_len=50, history_len=50, num_buckets=1 << 15, batch_size=64),
        model=ModelConfig(d_model=64, n_layers=1, n_heads=2, ff_dim=128, dropout=0.0),
        dnr=DNRConfig(generator_hidden=64),
        # The generator keeps the synthetic preset's lr: at 3e-4 it barely moves in 24 steps.
        # Item tables: row-wise Adagrad lr 0.05 (0.002-0.5 on the validation days, 5 seeds: within
        # the seed spread for concat, best for DNR-B).
        optim=OptimConfig(lr=3e-4, generator_lr=1e-2, embedding_lr=0.05),
        steps=40,
        switch_fraction=0.4,
    ),
}
# Any lake: the synthetic budget, with the daily job's default 2^18 id buckets (DataConfig): a real
# catalogue has 10^5-10^6 items, which would share buckets heavily in the synthetic 2^15, and the
# daily run's models see the same collisions.
PRESETS["lake"] = dataclasses.replace(
    PRESETS["synthetic"], data=dataclasses.replace(PRESETS["synthetic"].data, num_buckets=1 << 18))


# ------------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class Split:
    """Training and evaluation requests (validated ``request_logs`` rows) and their days."""

    train: pa.Table
    eval: pa.Table
    train_days: tuple[str, ...]
    eval_days: tuple[str, ...]
    eval_name: str
    """test or valid."""


def _days(table: pa.Table) -> list[str]:
    return sorted(pc.unique(table[C.ds]).to_pylist())


def _select_days(table: pa.Table, days: Sequence[str]) -> pa.Table:
    return table.filter(pc.is_in(table[C.ds], pa.array(list(days), pa.string())))


def time_split(table: pa.Table, eval_days: int, valid: bool) -> Split:
    """The last ``eval_days`` ds are the test days. ``valid``: drop them and hold out the
    ``eval_days`` before them instead (the test days are then never read)."""
    days = _days(table)
    if valid:
        days = days[:-eval_days]
    if len(days) <= eval_days:
        raise ValueError(f"{len(days)} days cannot hold {eval_days} evaluation day(s) and a training day")
    train_days, held_out = days[:-eval_days], days[-eval_days:]
    return Split(_select_days(table, train_days), _select_days(table, held_out), tuple(train_days),
                 tuple(held_out), "valid" if valid else "test")


def synthetic_table(spec: SyntheticData) -> pa.Table:
    """Requests of the training days, then of the test day, from ``make_requests``."""
    from dnr.data.synth import make_requests
    from dnr.data.synth_world import WorldConfig

    world = WorldConfig(seed=spec.world_seed, num_items=spec.num_items)
    sizes = [spec.requests_per_day] * spec.train_days + [spec.test_requests]
    return pa.concat_tables([make_requests(world, spec.start + dt.timedelta(days=d), np.arange(n))
                             for d, n in enumerate(sizes)])


def public_table(ratings: str) -> pa.Table:
    """MovieLens ratings -> request_logs with the prepare_public job's default settings."""
    from dnr.data.interactions import load_interactions
    from dnr.data.public import PublicDataConfig, build_request_logs

    return build_request_logs(load_interactions(ratings), PublicDataConfig()).table


class LakeError(ValueError):
    """A lake without request_logs, or a day it cannot serve: a usage error, not a crash."""


def lake_days(present: Sequence[str], eval_ds: str, train_days: Sequence[str] | None, valid: bool,
              where: str) -> tuple[tuple[str, ...], str]:
    """(training days, evaluation day) of a lake run, checked against the table's ``present`` ds.

    Default training days: every ds before ``eval_ds``. ``valid``: the last training day becomes
    the evaluation day and training uses the days before it, so ``eval_ds`` is never read.
    """
    missing = sorted({eval_ds, *(train_days or ())} - set(present))
    if missing:
        span = f"{present[0]}..{present[-1]}, {len(present)} days" if present else "no partitions"
        raise LakeError(f"ds {', '.join(missing)} not in {where} (it has {span})")
    train = sorted(set(train_days)) if train_days else [d for d in present if d < eval_ds]
    late = [d for d in train if d >= eval_ds]
    if late:  # training on the evaluation day or after it would leak the answers
        raise LakeError(f"train day(s) {', '.join(late)} not before --eval-ds {eval_ds}")
    need = 2 if valid else 1  # valid: one of them is evaluated
    if len(train) < need:
        raise LakeError(f"{len(train)} training day(s) before {eval_ds} in {where}: the "
                       f"{'valid' if valid else 'test'} split needs {need}")
    return (tuple(train[:-1]), train[-1]) if valid else (tuple(train), eval_ds)


def days_text(days: Sequence[str]) -> str:
    """``a..b`` for more than two consecutive days, else the list."""
    dates = [dt.date.fromisoformat(d) for d in days]
    consecutive = all((b - a).days == 1 for a, b in zip(dates, dates[1:]))
    return f"{days[0]}..{days[-1]}" if consecutive and len(days) > 2 else ", ".join(days)


def read_days(lake: Lake, delta, days: Sequence[str]) -> pa.Table:
    """The rows of ``days`` of ``delta`` (the lake's request_logs): the Delta log's partition
    values prune the files, which pyarrow's own filesystem reads (the way ``Lake.read_table``
    avoids the exit abort of delta-rs #2184). Sorted by (ds, request_id): the order, hence each
    seed's data order, does not depend on the file layout."""
    uri = lake.table_uri("request_logs")
    filesystem = pafs.SubTreeFileSystem(lake.fs_path(uri), lake.filesystem())
    data = delta.to_pyarrow_dataset(file_pruning_predicate=[(C.ds, "in", list(days))], filesystem=filesystem)
    return data.to_table().sort_by([(C.ds, "ascending"), (C.request_id, "ascending")])


def lake_split(args: argparse.Namespace, cfg: BenchConfig, log: Callable[[str], None]) -> tuple[Split, str, dict]:
    """The split of ``--lake``'s request_logs, a sentence on it and its facts for the .json."""
    from deltalake import DeltaTable

    lake = Lake(args.lake)
    uri = lake.table_uri("request_logs")
    if not DeltaTable.is_deltatable(uri, storage_options=lake.storage_options()):
        raise LakeError(f"no Delta table at {uri}")
    delta = DeltaTable(uri, storage_options=lake.storage_options())
    check_schema(pa.schema(delta.schema().to_arrow()), where=uri)
    version = delta.version()
    present = sorted({p[C.ds] for p in delta.partitions()})
    train_days, eval_day = lake_days(present, args.eval_ds, args.train_days, args.split == "valid",
                                     f"{uri} version {version}")
    table = keep_valid(read_days(lake, delta, [*train_days, eval_day]), cfg.data.max_list_len, log)
    split = Split(_select_days(table, train_days), _select_days(table, [eval_day]), train_days,
                  (eval_day,), args.split)
    if split.eval.num_rows == 0:
        raise LakeError(f"no valid request on {eval_day} in {uri} version {version}")
    items = pc.count_distinct(pc.list_flatten(table[C.candidate_item_ids])).as_py()
    source = (f"Lake {lake.root}, request_logs version {version}: train days {days_text(train_days)} "
              f"({len(train_days)} day(s), {split.train.num_rows:,} requests), {split.eval_name} day {eval_day} "
              f"({split.eval.num_rows:,} requests), {items:,} distinct candidate items.")
    return split, source, {"lake": lake.root, "table_version": version, "items": items}


def keep_valid(table: pa.Table, max_list_len: int, log: Callable[[str], None]) -> pa.Table:
    """Rows that pass the training job's validation; the quarantined ones are counted."""
    kept, bad, reasons = validate_split(table, max_list_len)
    if bad.num_rows:
        log(f"validation: dropped {bad.num_rows} rows ({', '.join(sorted(set(reasons)))})")
    return kept


def epoch_batches(table: pa.Table, cfg: BenchConfig, rng: np.random.Generator) -> Iterator[RerankBatch]:
    """One epoch in the seed's order: full batches of a fresh shuffle (the incomplete last one is
    dropped), collated as they are needed."""
    size = cfg.data.batch_size
    order = rng.permutation(table.num_rows)
    for lo in range(0, table.num_rows - size + 1, size):
        yield collate(table.take(order[lo:lo + size]), cfg.data)


def training_batches(table: pa.Table, cfg: BenchConfig, seed: int) -> Iterator[RerankBatch]:
    """The seed's training order: successive shuffled epochs, without end (the trainer stops)."""
    if table.num_rows < cfg.data.batch_size:
        raise ValueError(f"{table.num_rows} training requests, fewer than one batch of {cfg.data.batch_size}")
    rng = np.random.default_rng(seed)
    while True:
        yield from epoch_batches(table, cfg, rng)


def eval_batches(table: pa.Table, cfg: BenchConfig) -> list[RerankBatch]:
    size = cfg.eval_batch_size
    return [collate(table.slice(lo, size), cfg.data) for lo in range(0, table.num_rows, size)]


def trained_requests(split: Split, cfg: BenchConfig) -> int:
    """Requests a trained row trains on: the training days less the daily recipe's hold-out."""
    if cfg.recipe == "daily" and cfg.validation.fraction > 0:
        return int((~holdout_mask(split.train.column(C.request_id), cfg.validation.fraction)).sum())
    return split.train.num_rows


def holdout(table: pa.Table, fraction: float) -> tuple[pa.Table, pa.Table]:
    """(trained, held out): the daily job's hash hold-out of the training days' requests."""
    held = holdout_mask(table.column(C.request_id), fraction)
    return table.filter(pa.array(~held)), table.filter(pa.array(held))


# ------------------------------------------------------------------------------------ one run


def row_configs(row: Row, cfg: BenchConfig, train_requests: int) -> tuple[ModelConfig, DNRConfig, DeGReConfig]:
    """The model, DNR and DeGRe configs of a trained row: the preset plus the row's overrides."""
    mode = cfg.dnr_mode if row.score_mode == DNR_BASE else row.score_mode
    model = dataclasses.replace(cfg.model, family=row.family, score_mode=mode)
    dnr = dataclasses.replace(cfg.dnr, lambda_e=cfg.switch_step(train_requests), **dict(row.dnr))
    return model, dnr, dataclasses.replace(cfg.degre, **dict(row.degre))


@dataclass
class Trained:
    """One training run: its parts (eval mode, the best weights under the daily recipe), last
    loss terms, seconds per step and, under the daily recipe, its validation curve."""

    parts: TrainParts
    terms: dict[str, float]
    step_seconds: float
    steps: int = 0
    curve: list[tuple[int, float]] = field(default_factory=list)
    """[(step, hold-out N@6)]: step 0 is the fresh model."""
    best_step: int = 0


class HoldOut:
    """The daily recipe's validation: scores the hold-out, keeps the best weights, counts the
    patience (the rules of dnr.training.validation: the fresh model is never "best")."""

    def __init__(self, batches: Sequence[RerankBatch], cfg: ValidationConfig, parts: TrainParts):
        self.batches, self.cfg, self.parts = batches, cfg, parts
        self.curve: list[tuple[int, float]] = []
        self.best: float | None = None
        self.best_step, self.best_state, self.since_best = 0, None, 0

    def evaluate(self, step: int) -> bool:
        """Score the hold-out after ``step`` steps; True when the run should stop."""
        models = [m for m in (self.parts.reranker, self.parts.evaluator) if m is not None]
        with contextlib.ExitStack() as stack:
            for model in models:
                stack.enter_context(evaluating(model))
            value = evaluate(self.parts.reranker, self.batches)[0][self.cfg.metric]
        self.curve.append((step, value))
        if step == 0:
            return False
        if self.best is None or value > self.best + self.cfg.min_delta:
            self.best, self.best_step, self.since_best = value, step, 0
            self.best_state = [copy.deepcopy(m.state_dict()) for m in models]
            return False
        self.since_best += 1
        return bool(self.cfg.patience) and self.since_best >= self.cfg.patience

    def restore_best(self) -> None:
        if self.best_state is not None:
            for model, state in zip([m for m in (self.parts.reranker, self.parts.evaluator) if m is not None],
                                    self.best_state):
                model.load_state_dict(state)


def train_reranker(row: Row, cfg: BenchConfig, train: pa.Table, seed: int,
                   valid: Sequence[RerankBatch] = ()) -> Trained:
    """Train one row's models on ``train`` in the seed's order: ``cfg.steps`` steps (fixed
    recipe), or the daily recipe with ``valid`` as its hold-out."""
    model_cfg, dnr_cfg, degre_cfg = row_configs(row, cfg, train.num_rows)
    torch.manual_seed(seed)  # initialisation and the generators' noise draws
    parts = build_train_parts(model_cfg, cfg.data, dnr_cfg, cfg.optim, degre_cfg)
    parts.reranker.train()
    total, per_epoch = cfg.total_steps(train.num_rows), cfg.steps_per_epoch(train.num_rows)
    scheduled = cfg.recipe == "daily" and not is_constant(cfg.optim)
    holdout_run = HoldOut(valid, cfg.validation, parts) if cfg.recipe == "daily" and valid else None
    if holdout_run is not None:
        holdout_run.evaluate(0)
    terms: dict[str, float] = {}
    started, step, stop = time.monotonic(), 0, False
    for batch in training_batches(train, cfg, seed):
        if step >= total or stop:
            break
        if scheduled:
            for opt in (parts.reranker_opt, parts.generator_opt, parts.evaluator_opt):
                if opt is not None:
                    opt.scale_lr(lr_factor(step, total, cfg.optim))
        terms = train_step(batch, parts, step, model_cfg, dnr_cfg, cfg.optim, degre_cfg)
        step += 1
        if holdout_run is not None and (step % cfg.validation.every_steps == 0 or step % per_epoch == 0):
            stop = holdout_run.evaluate(step)
    step_seconds = (time.monotonic() - started) / max(step, 1)
    trained = Trained(parts, terms, step_seconds, steps=step)
    if holdout_run is not None:
        holdout_run.restore_best()
        trained.curve, trained.best_step = holdout_run.curve, holdout_run.best_step
    for model in (parts.reranker, parts.evaluator):
        if model is not None:
            model.eval()
    return trained


def mining_seconds_per_request(trained: Trained, row: Row, cfg: BenchConfig,
                               batches: Sequence[RerankBatch], train_requests: int) -> float:
    """DeGRe's offline cost: beam search + dense targets with the trained evaluator, per request."""
    degre_cfg = row_configs(row, cfg, train_requests)[2]
    started = time.monotonic()
    for batch in batches:
        mine(batch, trained.parts.evaluator, degre_cfg)
    return (time.monotonic() - started) / sum(b.num_requests for b in batches)


def row_scorer(row: Row, trained: Trained, cfg: BenchConfig) -> "Scorer":
    if row.scorer == "evaluator":
        steps, width = cfg.degre.list_len, 1  # greedy: the online counterpart of the generator
        return lambda batch: evaluator_ranking(trained.parts.evaluator, batch, steps, width)
    return trained.parts.reranker


Scorer = Callable[[RerankBatch], torch.Tensor]


@torch.no_grad()
def evaluate(scorer: Scorer, batches: Sequence[RerankBatch]) -> tuple[dict[str, float], np.ndarray]:
    """(metrics averaged per request, per-request N@K [R] with NaN for requests without a positive)."""
    acc = MetricAccumulator(ks=K)
    per_request = []
    for batch in batches:
        scores, valid = scorer(batch), batch.mask & batch.label_mask
        acc.update(scores, batch.labels, valid)
        per_request.append(per_request_metrics(scores, batch.labels, valid, K)[f"N@{K}"].numpy())
    metrics = acc.compute()
    return {name: metrics[name] for name in METRICS}, np.concatenate(per_request)


FIXED_SCORERS: dict[str, Scorer] = {
    "retriever": lambda batch: batch.scores,
    "oracle": lambda batch: batch.true_click_prob,
}


@dataclass
class Results:
    """Per row, per seed: metrics, per-request N@K, seconds."""

    rows: list[str]
    seeds: list[int]
    request_hashes: np.ndarray
    """[R] uint64 ``hash_request_ids`` of the evaluation requests, in the order of the per-request
    arrays (the evaluation table's: ``eval_batches`` slices it in order): the bootstrap's key."""
    metrics: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)
    per_request: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    seconds: dict[str, dict[int, float]] = field(default_factory=dict)
    cost: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)
    """Trained rows: train_ms_per_step, infer_ms_per_request and, for DeGRe, mining_ms_per_request."""
    training: dict[str, dict[int, dict]] = field(default_factory=dict)
    """Trained rows: steps taken, the step kept (daily recipe) and the hold-out curve."""

    def add(self, row: str, seed: int, metrics: dict[str, float], per_request: np.ndarray, seconds: float):
        self.metrics.setdefault(row, {})[seed] = metrics
        self.per_request.setdefault(row, {})[seed] = per_request
        self.seconds.setdefault(row, {})[seed] = seconds

    def summary(self, row: str, metric: str) -> tuple[float, float]:
        """(mean, sample std over seeds; 0 for a single seed)."""
        values = np.array([self.metrics[row][s][metric] for s in self.seeds])
        return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def run_benchmark(split: Split, rows: Sequence[Row], seeds: Sequence[int], cfg: BenchConfig,
                  log: Callable[[str], None] = print) -> Results:
    """Train and evaluate every row for every seed. Fixed rankings are evaluated once and
    repeated for each seed (they do not depend on it)."""
    results = Results([r.name for r in rows], list(seeds), hash_request_ids(split.eval.column(C.request_id)))
    evals = eval_batches(split.eval, cfg)
    eval_requests = sum(b.num_requests for b in evals)
    started = time.monotonic()
    fixed: dict[str, tuple[dict[str, float], np.ndarray]] = {}
    train, valid = split.train, []
    if cfg.recipe == "daily" and cfg.validation.fraction > 0:
        train, held = holdout(split.train, cfg.validation.fraction)
        valid = eval_batches(held.slice(0, cfg.validation.max_requests), cfg)
        log(f"daily recipe: {train.num_rows:,} requests trained, {held.num_rows:,} held out for validation")
    for seed in seeds:
        runs: dict[tuple, Trained] = {}
        for row in rows:
            t0, cpu0 = time.monotonic(), time.process_time()
            if row.scorer in ("model", "evaluator"):
                if row.training not in runs:
                    runs[row.training] = train_reranker(row, cfg, train, seed, valid)
                trained = runs[row.training]
                t_eval = time.monotonic()
                metrics, per_request = evaluate(row_scorer(row, trained, cfg), evals)
                cost = {"train_ms_per_step": 1e3 * trained.step_seconds,
                        "infer_ms_per_request": 1e3 * (time.monotonic() - t_eval) / eval_requests}
                if row.family == "degre" and row.scorer == "model" and dict(row.degre).get("dense", True):
                    cost["mining_ms_per_request"] = 1e3 * mining_seconds_per_request(
                        trained, row, cfg, list(itertools.islice(training_batches(train, cfg, seed), 20)),
                        train.num_rows)
                results.cost.setdefault(row.name, {})[seed] = cost
                results.training.setdefault(row.name, {})[seed] = {
                    "steps": trained.steps, "best_step": trained.best_step, "curve": trained.curve}
                name = "train/loss_direct" if "train/loss_direct" in trained.terms else "train/loss_theta"
                loss = f"  {name.removeprefix('train/')} {trained.terms[name]:.4f}"
                if trained.curve:
                    loss += (f"  steps {trained.steps}, best {trained.best_step} "
                             f"(hold-out {max(v for s_, v in trained.curve if s_ == trained.best_step):.4f})"
                             if trained.best_step else f"  steps {trained.steps}, no gain on the hold-out")
            else:
                if row.scorer not in fixed:
                    fixed[row.scorer] = evaluate(FIXED_SCORERS[row.scorer], evals)
                (metrics, per_request), loss = fixed[row.scorer], ""
            seconds = time.monotonic() - t0
            results.add(row.name, seed, metrics, per_request, seconds)
            # CPU seconds next to wall seconds: on a shared machine only the former is stable.
            log(f"seed {seed}  {row.name:<26} N@{K} {metrics[f'N@{K}']:.4f}  AUC {metrics['AUC']:.4f}"
                f"{loss}  ({seconds:.1f}s, cpu {time.process_time() - cpu0:.1f}s, "
                f"elapsed {time.monotonic() - started:.0f}s)")
    return results


# ------------------------------------------------------------------------------------ reporting


def paired_intervals(deltas: dict[tuple[str, str], np.ndarray], request_hashes: np.ndarray,
                     chunk: int = 4096) -> dict[tuple[str, str], DeltaInterval]:
    """Mean of each per-request difference and its interval: the project's paired Poisson
    bootstrap (``dnr.evaluation.bootstrap``, as in the replay job), ``REPLICATES`` replicates.

    ``deltas``: (row, baseline) -> [R] per-request difference (NaN = request excluded);
    ``request_hashes``: [R] the requests' id hashes, which fix the weights: every comparison sees
    the same resamples, and a re-run gives the same intervals. Weights are [chunk, REPLICATES]
    at a time, so a large evaluation day does not need R x REPLICATES of memory.
    """
    boots = {key: PairedBootstrap.empty(REPLICATES) for key in deltas}
    for key, delta in deltas.items():
        if len(delta) != len(request_hashes):
            raise ValueError(f"{key}: {len(delta)} per-request values for {len(request_hashes)} requests")
    for lo in range(0, len(request_hashes), chunk):
        weights = poisson_weights(request_hashes[lo:lo + chunk], REPLICATES)
        for key, delta in deltas.items():
            boots[key].add(delta[lo:lo + chunk], weights)
    return {key: boot.interval(CONFIDENCE) for key, boot in boots.items()}


def seed_mean_per_request(results: Results, row: str) -> np.ndarray:
    return np.mean([results.per_request[row][s] for s in results.seeds], axis=0)


def comparisons(results: Results) -> list[tuple[str, str]]:
    """(row, baseline) pairs of the differences table: DNR against each naive mode and the
    retriever order, DeGRe against DNR-B, PRM concat and the retriever order, the cheaper-step
    options against DNR-B."""
    have = set(results.rows)
    pairs = [(d, n) for d in DNR_ROWS for n in (*NAIVE_ROWS, BASELINE) if {d, n} <= have]
    pairs += [(d, n) for d in DEGRE_ROWS for n in ("DNR-B", "PRM concat", BASELINE) if {d, n} <= have]
    pairs += [(o, "DNR-B") for o in ("DNR-B half synthetic", "DNR-B 0.3 synthetic", *ABLATION_ROWS)
              if {o, "DNR-B"} <= have]
    return pairs


def bootstrap(results: Results) -> dict[tuple[str, str], DeltaInterval]:
    """The N@K intervals of every comparison and of every row against ``BASELINE``, on the
    seed-averaged per-request N@K."""
    pairs = comparisons(results)
    if BASELINE in results.rows:
        pairs += [(row, BASELINE) for row in results.rows if row != BASELINE]
    deltas = {(a, b): seed_mean_per_request(results, a) - seed_mean_per_request(results, b)
              for a, b in dict.fromkeys(pairs)}
    return paired_intervals(deltas, results.request_hashes)


def ratio_to_baseline(results: Results, row: str) -> float:
    """The row's mean N@K over the retriever order's (NaN if that is 0)."""
    base = results.summary(BASELINE, f"N@{K}")[0]
    return results.summary(row, f"N@{K}")[0] / base if base > 0 else math.nan


def interval_text(interval: DeltaInterval) -> str:
    return f"{interval.mean:+.4f} [{interval.low:+.4f}, {interval.high:+.4f}]"


def relative_cells(results: Results, row: str, intervals: dict[tuple[str, str], DeltaInterval]) -> list[str]:
    """The row's N@K over the retriever order's, and the interval of their difference with its
    verdict: better / worse when the interval excludes 0, else n.s."""
    ratio = f"{ratio_to_baseline(results, row):.3f}x"
    if row == BASELINE:
        return [ratio, "(reference)"]
    interval = intervals[(row, BASELINE)]
    verdict = "better" if interval.low > 0 else "worse" if interval.high < 0 else "n.s."
    return [ratio, f"{interval_text(interval)} {verdict}"]


def markdown(results: Results, header: str,
             intervals: dict[tuple[str, str], DeltaInterval] | None = None) -> str:
    """The table (mean ± std over seeds, N@K relative to the retriever order), then each DNR
    variant against each naive mode. ``intervals``: ``bootstrap(results)``, computed if None."""
    intervals = bootstrap(results) if intervals is None else intervals
    relative = [f"N@{K} / retriever", f"N@{K} − retriever [95% CI]"] if BASELINE in results.rows else []
    lines = [header, "", "| row | " + " | ".join([*METRICS, *relative]) + " |",
             "|---" * (len(METRICS) + len(relative) + 1) + "|"]
    for row in results.rows:
        cells = [f"{m:.4f} ± {s:.4f}" for m, s in (results.summary(row, metric) for metric in METRICS)]
        cells += relative_cells(results, row, intervals) if relative else []
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    bootstrap_note = (f"{CONFIDENCE:.0%} interval of a paired bootstrap over the evaluation requests, "
                      f"{REPLICATES:,} Poisson replicates keyed by request id as in the replay job "
                      "(dnr.evaluation.bootstrap)")
    if relative:
        lines += ["", f"*N@{K} / retriever*: mean N@{K} over the retriever order's. *N@{K} − retriever*: "
                      f"seed-averaged per-request difference, {bootstrap_note}; better / worse: the "
                      "interval excludes 0, n.s.: it does not."]
    pairs = comparisons(results)
    if pairs:
        lines += ["", f"N@{K} differences. *seeds*: mean ± std over seeds of the per-seed difference; "
                      "*beyond spread*: mean difference > std(DNR) + std(baseline) of the table above. "
                      f"*bootstrap*: seed-averaged per-request difference, {bootstrap_note}.", "",
                  "| comparison | seeds | beyond spread | bootstrap mean [95% CI] |", "|---|---|---|---|"]
        lines += [difference_line(results, row, base, intervals[(row, base)]) for row, base in pairs]
    lines += cost_lines(results)
    return "\n".join(lines) + "\n"


def difference_line(results: Results, row: str, base: str, interval: DeltaInterval) -> str:
    per_seed = np.array([results.metrics[row][s][f"N@{K}"] - results.metrics[base][s][f"N@{K}"]
                         for s in results.seeds])
    spread = results.summary(row, f"N@{K}")[1] + results.summary(base, f"N@{K}")[1]
    beyond = ("n/a (1 seed)" if len(per_seed) < 2 else "yes" if per_seed.mean() > spread
              else "no (worse)" if per_seed.mean() < -spread else "no")
    std = per_seed.std(ddof=1) if len(per_seed) > 1 else 0.0
    return f"| {row} − {base} | {per_seed.mean():+.4f} ± {std:.4f} | {beyond} | {interval_text(interval)} |"


def cost_lines(results: Results) -> list[str]:
    """Mean over seeds of each trained row's training, inference and mining times."""
    rows = [r for r in results.rows if r in results.cost]
    if not rows:
        return []
    lines = ["", "Cost, mean over seeds, in this process (1 torch thread, shared CPU: compare rows, not "
             "machines). *train*: one training step of a batch; *inference*: scoring the evaluation "
             "requests in batches of 512, per request; *mining*: DeGRe's beam search + dense targets "
             "with the trained evaluator on 20 training batches, per request.", "",
             "| row | train ms/step | inference ms/request | mining ms/request |", "|---|---|---|---|"]
    for row in rows:
        per_seed = list(results.cost[row].values())

        def mean(key: str) -> str:
            values = [c[key] for c in per_seed if key in c]
            return f"{np.mean(values):.3f}" if values else "–"

        lines.append(f"| {row} | {mean('train_ms_per_step')} | {mean('infer_ms_per_request')} | "
                     f"{mean('mining_ms_per_request')} |")
    return lines


def to_json(results: Results, meta: dict,
            intervals: dict[tuple[str, str], DeltaInterval] | None = None) -> dict:
    """Per-seed numbers; ``vs_retriever`` and ``comparisons``: the N@K intervals of the tables."""
    intervals = bootstrap(results) if intervals is None else intervals
    return {
        "meta": meta,
        "seeds": results.seeds,
        "rows": {
            row: {str(s): {**results.metrics[row][s], "seconds": round(results.seconds[row][s], 2),
                           **results.cost.get(row, {}).get(s, {}), **results.training.get(row, {}).get(s, {})}
                  for s in results.seeds}
            for row in results.rows
        },
        "vs_retriever": {row: {"ratio": ratio_to_baseline(results, row), **intervals[(row, b)].to_dict()}
                         for (row, b) in intervals if b == BASELINE},
        "comparisons": {f"{row} − {base}": intervals[(row, base)].to_dict() for row, base in comparisons(results)},
    }


# ------------------------------------------------------------------------------------ the command


def describe(split: Split, cfg: BenchConfig, rows: Sequence[Row], seeds: Sequence[int]) -> list[str]:
    """The derived quantities printed before training."""
    labels = pc.list_flatten(split.train[C.labels]).to_numpy()
    candidates = pc.list_value_length(split.train[C.candidate_item_ids]).to_numpy()
    eval_labels = split.eval[C.labels].combine_chunks()
    _, owner, _ = list_layout(eval_labels)
    positives = np.bincount(owner, weights=flat_values(eval_labels, 0), minlength=split.eval.num_rows)
    ranked = int((positives > 0).sum())
    trained = len({r.training for r in rows if r.scorer in ("model", "evaluator")})
    return [
        f"train days {split.train_days[0]}..{split.train_days[-1]} ({len(split.train_days)}), "
        f"{split.eval_name} days {split.eval_days[0]}..{split.eval_days[-1]} ({len(split.eval_days)})",
        f"requests: train {split.train.num_rows:,}, {split.eval_name} {split.eval.num_rows:,} "
        f"({ranked:,} with a positive: the requests N@{K} averages over)",
        f"candidates/request: mean {candidates.mean():.1f}, max {candidates.max()}; "
        f"labelled positives rate (train) {labels.mean():.4f} = {labels.sum() / split.train.num_rows:.2f}/request",
        f"budget per trained row: {budget_text(cfg, trained_requests(split, cfg))}",
        f"model: PRM d_model {cfg.model.d_model}, {cfg.model.n_layers} layer(s), {cfg.model.n_heads} heads, "
        f"ff {cfg.model.ff_dim}, dropout {cfg.model.dropout}, {cfg.data.num_buckets} id buckets",
        f"DNR: lambda_m {cfg.dnr.lambda_m}, lambda_x {cfg.dnr.lambda_x}, lambda_c {cfg.dnr.lambda_c}, "
        f"L_x {cfg.dnr.lx_estimator}",
        f"DeGRe: K {cfg.degre.list_len}, beam {cfg.degre.beam_width}, temperature {cfg.degre.temperature}, "
        f"beam_weight {cfg.degre.beam_weight}, evaluator d {cfg.degre.evaluator_d_model} x "
        f"{cfg.degre.evaluator_layers} layer(s), lr {cfg.degre.evaluator_lr:g}",
        f"runs: {trained} trained rows x {len(seeds)} seeds = {trained * len(seeds)} trainings, "
        f"at most {trained * len(seeds) * cfg.total_steps(trained_requests(split, cfg)):,} steps",
    ]


def budget_text(cfg: BenchConfig, train_requests: int) -> str:
    """The training budget of every trained row, in words."""
    per_epoch = cfg.steps_per_epoch(train_requests)
    if cfg.recipe == "daily":
        v = cfg.validation
        return (f"the daily job's recipe: at most {cfg.max_epochs} epochs of {per_epoch} steps of batch "
                f"{cfg.data.batch_size}, warm-up {cfg.optim.warmup_steps} steps then {cfg.optim.lr_decay} decay, "
                f"hold-out {v.fraction:.0%} scored every {v.every_steps} steps and each epoch's end, best "
                f"weights kept, patience {v.patience}; generator switch after {cfg.dnr.lambda_e_epochs:g} "
                f"epoch(s) (step {cfg.switch_step(train_requests)})")
    return (f"{cfg.steps} steps of {cfg.data.batch_size} requests = {cfg.epochs(train_requests):.2f} epochs, "
            f"constant lr, the last weights; generator switch at step {cfg.lambda_e}")


def table_header(dataset: str, split: Split, cfg: BenchConfig, seeds: Sequence[int], extra: str) -> str:
    return (
        f"### {dataset}: {split.eval_name} days {split.eval_days[0]}..{split.eval_days[-1]}, "
        f"trained on {split.train_days[0]}..{split.train_days[-1]}\n\n"
        f"Per-request averages at K={K} over {len(seeds)} seeds ({', '.join(map(str, seeds))}): mean ± sample std. "
        f"PRM d_model={cfg.model.d_model}, {cfg.model.n_layers} layer(s), {cfg.model.n_heads} heads, "
        f"ff {cfg.model.ff_dim}, dropout {cfg.model.dropout}, {cfg.data.num_buckets} id buckets; every trained "
        f"row: {budget_text(cfg, trained_requests(split, cfg))}, DNR rows on score mode {cfg.dnr_mode}, "
        f"AdamW lr {cfg.optim.lr:g} (dense), item table {cfg.optim.embedding_optimizer} lr {cfg.optim.embedding_lr:g}, "
        f"same data order per seed; DNR: generator lr {cfg.optim.generator_lr:g}, "
        f"lambda_m={cfg.dnr.lambda_m}, lambda_x={cfg.dnr.lambda_x}, lambda_c={cfg.dnr.lambda_c}, "
        f"noise scale {cfg.dnr.noise_scale}. DeGRe: K={cfg.degre.list_len}, beam {cfg.degre.beam_width}, "
        f"temperature {cfg.degre.temperature}, beam_weight {cfg.degre.beam_weight}, evaluator "
        f"d_model={cfg.degre.evaluator_d_model}, lr {cfg.degre.evaluator_lr:g}. {extra}"
    )


def ds_value(value: str) -> str:
    """argparse type of a ds: a YYYY-MM-DD date, kept as the partition string."""
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a YYYY-MM-DD ds") from None
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", choices=DATASETS)
    source.add_argument("--lake", help="lake root (local path or s3://...) whose request_logs to use")
    p.add_argument("--ratings", help="ratings.csv (--dataset ml-latest-small only)")
    p.add_argument("--eval-ds", type=ds_value, help="--lake: the day evaluated (test split)")
    p.add_argument("--train-days", type=ds_value, nargs="+", metavar="DS",
                   help="--lake: the days trained on (default: every ds before --eval-ds)")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="budget and model size (default: the dataset's; lake for --lake)")
    p.add_argument("--config", help="the daily job's recipe instead of a preset: its YAML (e.g. "
                                    "jobs/configs/public.yaml): model, DNR, optimizer, schedule, epochs, hold-out")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="--config overrides, as train_daily takes them (dnr.lambda_c=0.3)")
    p.add_argument("--dnr-mode", choices=[m for m in SCORE_MODES],
                   help="score mode the DNR rows train on (default: the config's model.score_mode, "
                        "denoise for a preset)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--split", choices=("test", "valid"), default="test",
                   help="valid: evaluate on the last training day(s); the test days are not read")
    p.add_argument("--rows", nargs="+", choices=[r.name for r in ROWS], metavar="ROW",
                   help=f"subset of rows (default: all that apply): {', '.join(r.name for r in ROWS)}")
    p.add_argument("--steps", type=int, help="override the preset's steps")
    p.add_argument("--lr", type=float, help="override the preset's reranker learning rate")
    p.add_argument("--generator-lr", type=float, help="override the preset's generator learning rate")
    p.add_argument("--embedding-lr", type=float, help="override the preset's item-table learning rate")
    p.add_argument("--lambda-m", type=float)
    p.add_argument("--lambda-x", type=float)
    p.add_argument("--lambda-c", type=float)
    p.add_argument("--switch-fraction", type=float, help="lambda_e as a fraction of the steps")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the .md and .json go")
    p.add_argument("--tag", default="", help="file name suffix: quality_<dataset or lake_<eval-ds>>"
                                             "[_valid][_<tag>].md")
    args = p.parse_args(argv)
    if args.lake is not None and args.eval_ds is None:
        p.error("--lake needs --eval-ds (the day to evaluate; --split valid: the day after the one evaluated)")
    if args.lake is not None and args.ratings:
        p.error("--ratings applies to --dataset ml-latest-small, not to --lake")
    if args.dataset is not None and (args.eval_ds or args.train_days):
        p.error(f"--eval-ds and --train-days apply to --lake, not to --dataset {args.dataset} (whose days are fixed)")
    if args.set and not args.config:
        p.error("--set overrides the --config recipe; give --config too")
    if args.dataset == "ml-latest-small" and not args.ratings:
        p.error("--dataset ml-latest-small needs --ratings")
    args.preset = args.preset or args.dataset or "lake"
    return args


def configure(args: argparse.Namespace) -> BenchConfig:
    """The preset (or the daily recipe of ``--config``) with the command-line overrides."""
    cfg = daily_recipe(args.config, args.set) if args.config else PRESETS[args.preset]
    if args.dnr_mode:
        cfg = dataclasses.replace(cfg, dnr_mode=args.dnr_mode)
    dnr = {k: v for k, v in (("lambda_m", args.lambda_m), ("lambda_x", args.lambda_x),
                             ("lambda_c", args.lambda_c)) if v is not None}
    top = {k: v for k, v in (("steps", args.steps), ("switch_fraction", args.switch_fraction)) if v is not None}
    optim = dataclasses.replace(cfg.optim, **{k: v for k, v in (("lr", args.lr), ("generator_lr", args.generator_lr),
                                                                ("embedding_lr", args.embedding_lr))
                                              if v is not None})
    return dataclasses.replace(cfg, dnr=dataclasses.replace(cfg.dnr, **dnr), optim=optim, **top)


def load_split(args: argparse.Namespace, cfg: BenchConfig, log: Callable[[str], None]) -> tuple[Split, str, dict]:
    """The time split, a sentence on where it came from and facts for the .json's meta."""
    if args.lake is not None:
        return lake_split(args, cfg, log)
    if args.dataset == "synthetic":
        spec = SyntheticData()
        table = synthetic_table(spec)
        source = (f"Synthetic world (dnr.data.synth) seed {spec.world_seed} fixed across seeds, "
                  f"num_items={spec.num_items:,}, other WorldConfig defaults; {spec.requests_per_day:,} "
                  f"requests per training day, {spec.test_requests:,} on the test day.")
        eval_days = 1
    else:
        table = public_table(args.ratings)
        eval_days = PublicData().test_days
        source = ("MovieLens ml-latest-small via dnr.data.public (prepare_public defaults: BPR retriever, "
                  f"Platt-calibrated scores, 30 days); last {eval_days} days are the test set.")
    table = keep_valid(table, cfg.data.max_list_len, log)
    return time_split(table, eval_days, args.split == "valid"), source, {}


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s), "
            f"python {platform.python_version()}, torch {torch.__version__}")


def applicable_rows(args: argparse.Namespace, split: Split, log: Callable[[str], None]) -> list[Row]:
    """The rows asked for (default: all), less the oracle where the evaluation day lacks
    ``true_click_prob`` on any request (real logs have none)."""
    rows = [ROW_BY_NAME[n] for n in args.rows] if args.rows else list(ROWS)
    column = split.eval.column(C.true_click_prob) if C.true_click_prob in split.eval.column_names else None
    missing = split.eval.num_rows if column is None else column.null_count
    if missing and any(r.scorer == "oracle" for r in rows):
        rows = [r for r in rows if r.scorer != "oracle"]
        log(f"no oracle row: true_click_prob is null on {missing:,} of {split.eval.num_rows:,} evaluation requests")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)  # a shared 2-core machine: more threads only add contention
    cfg = configure(args)
    started, cpu_started = time.monotonic(), time.process_time()
    try:
        split, source, facts = load_split(args, cfg, print)
    except (LakeError, SchemaError) as error:  # the message names the table, day or column: no traceback
        print(f"quality.py: error: {error}", file=sys.stderr)
        return 2
    rows = applicable_rows(args, split, print)
    print(f"data ready in {time.monotonic() - started:.0f}s: {source}")
    print("\n".join(describe(split, cfg, rows, args.seeds)))

    results = run_benchmark(split, rows, args.seeds, cfg)
    total, cpu = time.monotonic() - started, time.process_time() - cpu_started
    name = args.dataset or "lake"
    header = table_header(name, split, cfg, args.seeds,
                          f"{source} Machine: {machine()}; wall time {total / 60:.1f} min, "
                          f"process CPU time {cpu / 60:.1f} min.")
    intervals = bootstrap(results)
    text = markdown(results, header, intervals)
    print("\n" + text)
    stem = (f"quality_{args.dataset}" if args.dataset else f"quality_lake_{args.eval_ds}") + \
        ("" if args.split == "test" else "_valid") + (f"_{args.tag}" if args.tag else "")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.md").write_text(text)
    meta = {"dataset": name, "preset": None if args.config else args.preset, "recipe": args.config or cfg.recipe,
            "split": args.split,
            "argv": sys.argv[1:] if argv is None else argv, "config": dataclasses.asdict(cfg),
            "source": source, **facts, "machine": machine(), "wall_seconds": round(total, 1),
            "cpu_seconds": round(cpu, 1), "train_days": split.train_days, "eval_days": split.eval_days}
    (args.out / f"{stem}.json").write_text(json.dumps(to_json(results, meta, intervals), indent=1, default=str) + "\n")
    print(f"wrote {args.out / stem}.md and .json ({total / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    from dnr.runtime import exit_process

    # A process that read a Delta table can abort at interpreter exit (delta-rs #2184): flush, _exit.
    exit_process(main())
