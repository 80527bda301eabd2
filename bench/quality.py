"""Ranking quality of DNR against its baselines: one command per dataset, in-process PyTorch.

    python bench/quality.py --dataset synthetic --seeds 0 1 2
    python bench/quality.py --dataset ml-latest-small \
        --ratings ../shared/data/ml-latest-small/ratings.csv --seeds 0 1 2 3 4

No Ray and no lake: this measures the method, not the system. Each dataset is split by time:
rerankers train on the earlier days and are evaluated on later held-out day(s). ``--split valid``
instead holds out the last *training* day(s) and never touches the test days: tune with it.

Every trained row gets the same budget (steps, batch size, learning rate, data order) from the
dataset's preset; a seed fixes the model initialisation, the training order and the noise draws.
Rows: the retriever order (no training), PRM with each naive score mode, DNR-G, DNR-B, three
ablations of DNR-B, the DeGRe rows (evaluator-only greedy, the generator distilled from
beam-mined dense targets, the generator without dense supervision) and on synthetic data the
oracle order from ``true_click_prob``. ``--rows`` picks a subset and ``--tag`` names its files.

Writes ``bench/results/quality_<dataset>.md`` (mean ± std over seeds, plus a paired bootstrap
of the N@6 differences over test requests, and the cost of each trained row: training time per
step, inference time per request, DeGRe's mining time per request) and ``quality_<dataset>.json``
(per-seed numbers).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from dnr.config import DataConfig, DeGReConfig, DNRConfig, ModelConfig, OptimConfig
from dnr.data.arrow_lists import flat_values, list_layout
from dnr.data.batch import RerankBatch
from dnr.data.collate import collate
from dnr.data.validate import split as validate_split
from dnr.evaluation.metrics import MetricAccumulator, per_request_metrics
from dnr.models.degre_search import evaluator_ranking
from dnr.schemas import REQUEST_LOGS
from dnr.training.step import TrainParts, build_train_parts, mine, train_step

C = REQUEST_LOGS.col
K = 6
METRICS = (f"H@{K}", f"N@{K}", f"M@{K}", f"F1@{K}", "AUC")
RESULTS_DIR = Path(__file__).resolve().parent / "results"


# ------------------------------------------------------------------------------------ the rows


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


ROWS: tuple[Row, ...] = (
    Row("retriever order", scorer="retriever"),
    Row("PRM none", score_mode="none"),
    Row("PRM concat", score_mode="concat"),
    Row("PRM add", score_mode="add"),
    Row("PRM weight", score_mode="weight"),
    Row("DNR-G", score_mode="denoise", dnr=(("heuristic", "gaussian"),)),
    Row("DNR-B", score_mode="denoise", dnr=(("heuristic", "beta"),)),
    # The ablations are of DNR-B (the config's default heuristic).
    Row("DNR-B w/o L_adv", score_mode="denoise", dnr=(("heuristic", "beta"), ("use_adv", False))),
    Row("DNR-B w/o L_x", score_mode="denoise", dnr=(("heuristic", "beta"), ("use_lx", False))),
    Row("DNR-B heuristic only", score_mode="denoise",
        dnr=(("heuristic", "beta"), ("use_generator", False))),
    # The cheaper-step option (not the default): the synthetic copy for half of each batch.
    Row("DNR-B half synthetic", score_mode="denoise",
        dnr=(("heuristic", "beta"), ("synthetic_fraction", 0.5))),
    Row("DNR-B 0.3 synthetic", score_mode="denoise",
        dnr=(("heuristic", "beta"), ("synthetic_fraction", 0.3))),
    # DeGRe on the same backbone size, with score mode add (starts at the retriever order; trained
    # with plain supervision, denoise learns little without DNR's generator: see bench/README.md).
    # The first two rows share one training run.
    Row("DeGRe evaluator greedy", scorer="evaluator", family="degre", score_mode="add"),
    Row("DeGRe generator", family="degre", score_mode="add"),
    Row("DeGRe generator w/o dense", family="degre", score_mode="add", degre=(("dense", False),)),
    Row("oracle (true_click_prob)", scorer="oracle"),
)
ROW_BY_NAME = {row.name: row for row in ROWS}
NAIVE_ROWS = ("PRM concat", "PRM add", "PRM weight")
DNR_ROWS = ("DNR-G", "DNR-B")
DEGRE_ROWS = ("DeGRe evaluator greedy", "DeGRe generator", "DeGRe generator w/o dense")


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

    @property
    def lambda_e(self) -> int:
        return round(self.switch_fraction * self.steps)

    def epochs(self, train_requests: int) -> float:
        return self.steps * self.data.batch_size / train_requests


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


def keep_valid(table: pa.Table, max_list_len: int, log: Callable[[str], None]) -> pa.Table:
    """Rows that pass the training job's validation; the quarantined ones are counted."""
    kept, bad, reasons = validate_split(table, max_list_len)
    if bad.num_rows:
        log(f"validation: dropped {bad.num_rows} rows ({', '.join(sorted(set(reasons)))})")
    return kept


def training_batches(table: pa.Table, cfg: BenchConfig, seed: int) -> list[RerankBatch]:
    """The seed's training order: ``cfg.steps`` full batches from successive shuffles (each
    epoch's incomplete last batch is dropped)."""
    if table.num_rows < cfg.data.batch_size:
        raise ValueError(f"{table.num_rows} training requests, fewer than one batch of {cfg.data.batch_size}")
    rng = np.random.default_rng(seed)
    size = cfg.data.batch_size
    batches: list[RerankBatch] = []
    while len(batches) < cfg.steps:
        order = rng.permutation(table.num_rows)
        batches += [collate(table.take(order[lo:lo + size]), cfg.data)
                    for lo in range(0, table.num_rows - size + 1, size)][:cfg.steps - len(batches)]
    return batches


def eval_batches(table: pa.Table, cfg: BenchConfig) -> list[RerankBatch]:
    size = cfg.eval_batch_size
    return [collate(table.slice(lo, size), cfg.data) for lo in range(0, table.num_rows, size)]


# ------------------------------------------------------------------------------------ one run


def row_configs(row: Row, cfg: BenchConfig) -> tuple[ModelConfig, DNRConfig, DeGReConfig]:
    """The model, DNR and DeGRe configs of a trained row: the preset plus the row's overrides."""
    model = dataclasses.replace(cfg.model, family=row.family, score_mode=row.score_mode)
    dnr = dataclasses.replace(cfg.dnr, lambda_e=cfg.lambda_e, **dict(row.dnr))
    return model, dnr, dataclasses.replace(cfg.degre, **dict(row.degre))


@dataclass
class Trained:
    """One training run: its parts (eval mode), last loss terms and seconds per step."""

    parts: TrainParts
    terms: dict[str, float]
    step_seconds: float


def train_reranker(row: Row, cfg: BenchConfig, batches: Sequence[RerankBatch], seed: int) -> Trained:
    """Train one row's models on ``batches`` (the seed's order)."""
    model_cfg, dnr_cfg, degre_cfg = row_configs(row, cfg)
    torch.manual_seed(seed)  # initialisation and the generators' noise draws
    parts = build_train_parts(model_cfg, cfg.data, dnr_cfg, cfg.optim, degre_cfg)
    parts.reranker.train()
    terms: dict[str, float] = {}
    started = time.monotonic()
    for step, batch in enumerate(batches):
        terms = train_step(batch, parts, step, model_cfg, dnr_cfg, cfg.optim, degre_cfg)
    step_seconds = (time.monotonic() - started) / max(len(batches), 1)
    for model in (parts.reranker, parts.evaluator):
        if model is not None:
            model.eval()
    return Trained(parts, terms, step_seconds)


def mining_seconds_per_request(trained: Trained, row: Row, cfg: BenchConfig,
                               batches: Sequence[RerankBatch]) -> float:
    """DeGRe's offline cost: beam search + dense targets with the trained evaluator, per request."""
    degre_cfg = row_configs(row, cfg)[2]
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
    metrics: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)
    per_request: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    seconds: dict[str, dict[int, float]] = field(default_factory=dict)
    cost: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)
    """Trained rows: train_ms_per_step, infer_ms_per_request and, for DeGRe, mining_ms_per_request."""

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
    results = Results([r.name for r in rows], list(seeds))
    evals = eval_batches(split.eval, cfg)
    eval_requests = sum(b.num_requests for b in evals)
    started = time.monotonic()
    fixed: dict[str, tuple[dict[str, float], np.ndarray]] = {}
    for seed in seeds:
        batches = training_batches(split.train, cfg, seed)
        runs: dict[tuple, Trained] = {}
        for row in rows:
            t0, cpu0 = time.monotonic(), time.process_time()
            if row.scorer in ("model", "evaluator"):
                if row.training not in runs:
                    runs[row.training] = train_reranker(row, cfg, batches, seed)
                trained = runs[row.training]
                t_eval = time.monotonic()
                metrics, per_request = evaluate(row_scorer(row, trained, cfg), evals)
                cost = {"train_ms_per_step": 1e3 * trained.step_seconds,
                        "infer_ms_per_request": 1e3 * (time.monotonic() - t_eval) / eval_requests}
                if row.family == "degre" and row.scorer == "model" and dict(row.degre).get("dense", True):
                    cost["mining_ms_per_request"] = 1e3 * mining_seconds_per_request(
                        trained, row, cfg, batches[:20])
                results.cost.setdefault(row.name, {})[seed] = cost
                name = "train/loss_direct" if "train/loss_direct" in trained.terms else "train/loss_theta"
                loss = f"  {name.removeprefix('train/')} {trained.terms[name]:.4f}"
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


def paired_bootstrap(a: np.ndarray, b: np.ndarray, rounds: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b over requests and its 95% percentile interval, resampling requests.

    ``a``, ``b``: [R] per-request values (NaN = excluded, at the same requests in both).
    """
    keep = ~np.isnan(a) & ~np.isnan(b)
    diff = a[keep] - b[keep]
    idx = np.random.default_rng(seed).integers(0, diff.size, size=(rounds, diff.size))
    means = diff[idx].mean(axis=1)
    return float(diff.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def seed_mean_per_request(results: Results, row: str) -> np.ndarray:
    return np.mean([results.per_request[row][s] for s in results.seeds], axis=0)


def markdown(results: Results, header: str) -> str:
    """The table (mean ± std over seeds), then each DNR variant against each naive mode."""
    lines = [header, "", "| row | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for row in results.rows:
        cells = [f"{m:.4f} ± {s:.4f}" for m, s in (results.summary(row, metric) for metric in METRICS)]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    pairs = [(d, n) for d in DNR_ROWS for n in (*NAIVE_ROWS, "retriever order")
             if d in results.rows and n in results.rows]
    pairs += [(d, n) for d in DEGRE_ROWS for n in ("DNR-B", "PRM concat", "retriever order")
              if d in results.rows and n in results.rows]
    pairs += [(option, "DNR-B") for option in ("DNR-B half synthetic", "DNR-B 0.3 synthetic")
              if {option, "DNR-B"} <= set(results.rows)]
    if pairs:
        lines += ["", f"N@{K} differences. *seeds*: mean ± std over seeds of the per-seed difference; "
                      "*beyond spread*: mean difference > std(DNR) + std(baseline) of the table above. "
                      "*bootstrap*: seed-averaged per-request difference, 95% interval over "
                      "2,000 resamples of the evaluation requests.", "",
                  "| comparison | seeds | beyond spread | bootstrap mean [95% CI] |", "|---|---|---|---|"]
        for dnr_row, base in pairs:
            per_seed = np.array([results.metrics[dnr_row][s][f"N@{K}"] - results.metrics[base][s][f"N@{K}"]
                                 for s in results.seeds])
            spread = results.summary(dnr_row, f"N@{K}")[1] + results.summary(base, f"N@{K}")[1]
            beyond = ("n/a (1 seed)" if len(per_seed) < 2 else "yes" if per_seed.mean() > spread
                      else "no (worse)" if per_seed.mean() < -spread else "no")
            mean, lo, hi = paired_bootstrap(seed_mean_per_request(results, dnr_row),
                                            seed_mean_per_request(results, base))
            std = per_seed.std(ddof=1) if len(per_seed) > 1 else 0.0
            lines.append(f"| {dnr_row} − {base} | {per_seed.mean():+.4f} ± {std:.4f} | {beyond} | "
                         f"{mean:+.4f} [{lo:+.4f}, {hi:+.4f}] |")
    lines += cost_lines(results)
    return "\n".join(lines) + "\n"


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


def to_json(results: Results, meta: dict) -> dict:
    return {
        "meta": meta,
        "seeds": results.seeds,
        "rows": {
            row: {str(s): {**results.metrics[row][s], "seconds": round(results.seconds[row][s], 2),
                           **results.cost.get(row, {}).get(s, {})}
                  for s in results.seeds}
            for row in results.rows
        },
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
        f"budget per trained row: {cfg.steps} steps of {cfg.data.batch_size} requests = "
        f"{cfg.epochs(split.train.num_rows):.2f} epochs, lr {cfg.optim.lr:g}, "
        f"generator switch (lambda_e) at step {cfg.lambda_e}",
        f"model: PRM d_model {cfg.model.d_model}, {cfg.model.n_layers} layer(s), {cfg.model.n_heads} heads, "
        f"ff {cfg.model.ff_dim}, dropout {cfg.model.dropout}, {cfg.data.num_buckets} id buckets",
        f"DNR: lambda_m {cfg.dnr.lambda_m}, lambda_x {cfg.dnr.lambda_x}, lambda_c {cfg.dnr.lambda_c}, "
        f"L_x {cfg.dnr.lx_estimator}",
        f"DeGRe: K {cfg.degre.list_len}, beam {cfg.degre.beam_width}, temperature {cfg.degre.temperature}, "
        f"beam_weight {cfg.degre.beam_weight}, evaluator d {cfg.degre.evaluator_d_model} x "
        f"{cfg.degre.evaluator_layers} layer(s), lr {cfg.degre.evaluator_lr:g}",
        f"runs: {trained} trained rows x {len(seeds)} seeds = {trained * len(seeds)} trainings, "
        f"{trained * len(seeds) * cfg.steps:,} steps",
    ]


def table_header(dataset: str, split: Split, cfg: BenchConfig, seeds: Sequence[int], extra: str) -> str:
    return (
        f"### {dataset}: {split.eval_name} days {split.eval_days[0]}..{split.eval_days[-1]}, "
        f"trained on {split.train_days[0]}..{split.train_days[-1]}\n\n"
        f"Per-request averages at K={K} over {len(seeds)} seeds ({', '.join(map(str, seeds))}): mean ± sample std. "
        f"PRM d_model={cfg.model.d_model}, {cfg.model.n_layers} layer(s), {cfg.model.n_heads} heads, "
        f"ff {cfg.model.ff_dim}, dropout {cfg.model.dropout}, {cfg.data.num_buckets} id buckets; every trained "
        f"row: {cfg.steps} steps ({cfg.epochs(split.train.num_rows):.2f} epochs) of batch {cfg.data.batch_size}, "
        f"AdamW lr {cfg.optim.lr:g} (dense), item table {cfg.optim.embedding_optimizer} lr {cfg.optim.embedding_lr:g}, "
        f"same data order per seed; DNR: generator lr {cfg.optim.generator_lr:g}, "
        f"lambda_m={cfg.dnr.lambda_m}, lambda_x={cfg.dnr.lambda_x}, lambda_c={cfg.dnr.lambda_c}, "
        f"lambda_e={cfg.lambda_e}. DeGRe: K={cfg.degre.list_len}, beam {cfg.degre.beam_width}, "
        f"temperature {cfg.degre.temperature}, beam_weight {cfg.degre.beam_weight}, evaluator "
        f"d_model={cfg.degre.evaluator_d_model}, lr {cfg.degre.evaluator_lr:g}. {extra}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=sorted(PRESETS), required=True)
    p.add_argument("--ratings", help="ratings.csv (ml-latest-small only)")
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
    p.add_argument("--tag", default="", help="file name suffix: quality_<dataset>[_valid][_<tag>].md")
    return p.parse_args(argv)


def configure(args: argparse.Namespace) -> BenchConfig:
    """The dataset's preset with the command-line overrides."""
    cfg = PRESETS[args.dataset]
    dnr = {k: v for k, v in (("lambda_m", args.lambda_m), ("lambda_x", args.lambda_x),
                             ("lambda_c", args.lambda_c)) if v is not None}
    top = {k: v for k, v in (("steps", args.steps), ("switch_fraction", args.switch_fraction)) if v is not None}
    optim = dataclasses.replace(cfg.optim, **{k: v for k, v in (("lr", args.lr), ("generator_lr", args.generator_lr),
                                                                ("embedding_lr", args.embedding_lr))
                                              if v is not None})
    return dataclasses.replace(cfg, dnr=dataclasses.replace(cfg.dnr, **dnr), optim=optim, **top)


def load_split(args: argparse.Namespace, cfg: BenchConfig, log: Callable[[str], None]) -> tuple[Split, str]:
    """The dataset's time split and a sentence on where it came from."""
    valid = args.split == "valid"
    if args.dataset == "synthetic":
        spec = SyntheticData()
        table = synthetic_table(spec)
        source = (f"Synthetic world (dnr.data.synth) seed {spec.world_seed} fixed across seeds, "
                  f"num_items={spec.num_items:,}, other WorldConfig defaults; {spec.requests_per_day:,} "
                  f"requests per training day, {spec.test_requests:,} on the test day.")
        eval_days = 1
    else:
        if not args.ratings:
            raise SystemExit("--ratings is required for --dataset ml-latest-small")
        table = public_table(args.ratings)
        eval_days = PublicData().test_days
        source = ("MovieLens ml-latest-small via dnr.data.public (prepare_public defaults: BPR retriever, "
                  f"Platt-calibrated scores, 30 days); last {eval_days} days are the test set.")
    table = keep_valid(table, cfg.data.max_list_len, log)
    return time_split(table, eval_days, valid), source


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s), "
            f"python {platform.python_version()}, torch {torch.__version__}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)  # a shared 2-core machine: more threads only add contention
    cfg = configure(args)
    started, cpu_started = time.monotonic(), time.process_time()
    split, source = load_split(args, cfg, print)
    rows = [ROW_BY_NAME[n] for n in args.rows] if args.rows else list(ROWS)
    if split.eval[C.true_click_prob].null_count == split.eval.num_rows:
        rows = [r for r in rows if r.scorer != "oracle"]  # real data has no oracle
    print(f"data ready in {time.monotonic() - started:.0f}s: {source}")
    print("\n".join(describe(split, cfg, rows, args.seeds)))

    results = run_benchmark(split, rows, args.seeds, cfg)
    total, cpu = time.monotonic() - started, time.process_time() - cpu_started
    header = table_header(args.dataset, split, cfg, args.seeds,
                          f"{source} Machine: {machine()}; wall time {total / 60:.1f} min, "
                          f"process CPU time {cpu / 60:.1f} min.")
    text = markdown(results, header)
    print("\n" + text)
    suffix = ("" if args.split == "test" else "_valid") + (f"_{args.tag}" if args.tag else "")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"quality_{args.dataset}{suffix}.md").write_text(text)
    meta = {"dataset": args.dataset, "split": args.split, "argv": sys.argv[1:] if argv is None else argv,
            "config": dataclasses.asdict(cfg), "source": source, "machine": machine(),
            "wall_seconds": round(total, 1), "cpu_seconds": round(cpu, 1), "train_days": split.train_days, "eval_days": split.eval_days}
    (args.out / f"quality_{args.dataset}{suffix}.json").write_text(
        json.dumps(to_json(results, meta), indent=1, default=str) + "\n")
    print(f"wrote {args.out / f'quality_{args.dataset}{suffix}.md'} and .json ({total / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
