"""One quality run: each row's configs, its training (fixed or the daily recipe with its hold-out),
its scorer, the per-request evaluation and the benchmark loop over rows and seeds."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import torch

from bench.quality_bench.rows import DNR_BASE, K, METRICS, Row
from bench.quality_bench.sources import C, BenchConfig, Split, eval_batches, holdout, training_batches
from dnr.config import DeGReConfig, DNRConfig, ModelConfig, ValidationConfig
from dnr.data.batch import RerankBatch
from dnr.data.validate import hash_request_ids
from dnr.metrics import MetricAccumulator, per_request_metrics
from dnr.models.degre_search import evaluator_ranking
from dnr.training.recipes.degre import mine
from dnr.training.schedule import is_constant, lr_factor
from dnr.training.step import TrainParts, build_train_parts, train_step
from dnr.training.wrappers import evaluating


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
