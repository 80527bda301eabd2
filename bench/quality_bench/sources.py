"""The data of a quality run: the per-dataset budgets (presets, the daily job's recipe), the
synthetic, MovieLens and lake tables, their time splits, and the batches a run trains and scores on."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from dnr.config import DataConfig, DeGReConfig, DNRConfig, ModelConfig, OptimConfig, ValidationConfig, load_config
from dnr.data.batch import RerankBatch
from dnr.data.collate import collate
from dnr.data.validate import check_schema, holdout_mask
from dnr.data.validate import split as validate_split
from dnr.schemas import REQUEST_LOGS
from dnr.storage import Lake

C = REQUEST_LOGS.col


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
    """MovieLens through ``dnr.datasets.public`` (the prepare_public job's defaults): the last
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
    from dnr.datasets.synth import make_requests
    from dnr.datasets.synth_world import WorldConfig

    world = WorldConfig(seed=spec.world_seed, num_items=spec.num_items)
    sizes = [spec.requests_per_day] * spec.train_days + [spec.test_requests]
    return pa.concat_tables([make_requests(world, spec.start + dt.timedelta(days=d), np.arange(n))
                             for d, n in enumerate(sizes)])


def public_table(ratings: str) -> pa.Table:
    """MovieLens ratings -> request_logs with the prepare_public job's default settings."""
    from dnr.datasets.interactions import load_interactions
    from dnr.datasets.public import PublicDataConfig, build_request_logs

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
