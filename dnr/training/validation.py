"""Validation inside a run: the held-out slice scored during training, the best checkpoint kept,
the run stopped when the metric stops improving.

The slice is the ``valid`` dataset of the run: the window's requests that
:func:`dnr.data.validate.holdout_mask` holds out (``validation.fraction``), split across the
workers like the training stream. Each worker reads its part once, at the first evaluation, and
keeps its batches (at most ``validation.max_requests`` over all workers). An evaluation scores
them with the reranker in eval mode and adds them into the replay's
:class:`~dnr.evaluation.metrics.MetricAccumulator` (the same metric code as the gate), whose sums
are all-reduced: every rank gets the same value, so every rank takes the same decision.

When it is run: at the start of the run (the parent's value, for the curve; never a candidate
for "best"), every ``validation.every_steps`` steps of the run, and at every epoch's end. An
evaluation that improves on the run's best by more than ``validation.min_delta`` is followed by a
checkpoint; after ``validation.patience`` evaluations without one, the run stops. Every
checkpoint reports ``valid/score`` (the metric of exactly its weights when they are the run's
best so far, else ``UNSCORED``), which Ray Train ranks checkpoints by, so the driver registers the best one
(:func:`dnr.daily.register.registered_checkpoint`), not the last. The curve, the best value and the
patience counter live in the progress record, so a resumed run keeps them.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from dnr.metrics import MetricAccumulator, metric_ks
from dnr.training.wrappers import evaluating

VALID_DATASET = "valid"
SCORE_KEY = "valid/score"
"""The metric every checkpoint reports for its own weights (Ray Train's score attribute)."""
UNSCORED = -1.0
"""``valid/score`` of weights not evaluated or not the best: below every metric (in [0, 1]),
and finite, because Ray Train stores its checkpoint list as JSON, where NaN comes back as null
and a resumed controller cannot rank null."""


class Validation:
    """One worker's view of the run's validation (a no-op when ``validation.fraction`` is 0)."""

    def __init__(self, run, logger, batches_of):
        self.run, self.logger = run, logger  # logger: rank 0's TensorBoard writer, else None
        self.batches_of = batches_of  # dataset shard -> its batches on this worker's device
        self.cfg = run.cfg.validation
        self.enabled = self.cfg.fraction > 0.0
        self.batches = None
        # the last evaluation (global step, value); a resumed run's comes from its progress record
        last = run.progress.valid_curve[-1] if run.progress.valid_curve else (None, math.nan)
        self.evaluated_at, self.value = last[0], last[1]

    def maybe_evaluate(self, epoch_end: bool = False) -> bool:
        """Evaluate when due; returns True when the run's best improved (a checkpoint should follow)."""
        p = self.run.progress
        if not self.enabled or self.evaluated_at == p.global_step:
            return False
        start = self.run.run_step == 0 and not p.valid_curve
        if not (start or epoch_end or self.run.run_step % self.cfg.every_steps == 0):
            return False
        return self._evaluate(candidate=not start)

    def _evaluate(self, candidate: bool) -> bool:
        p, cfg = self.run.progress, self.cfg
        self.value, self.evaluated_at = self.score(), p.global_step
        improved = p.record_validation(self.value, candidate, cfg.min_delta, cfg.patience)
        if self.logger is not None:
            self.logger.log(p.global_step, {f"valid/{cfg.metric}": self.value,
                                            f"valid/best_{cfg.metric}": p.valid_best or math.nan})
        return improved

    def score(self) -> float:
        """The validation metric of the reranker as it is now (a collective: every rank calls it)."""
        if self.batches is None:
            self.batches = self._load()
        acc = MetricAccumulator(ks=metric_ks((self.cfg.metric,)))
        model = self.run.parts.reranker
        with torch.no_grad(), evaluating(model):
            for batch in self.batches:
                logits = model(batch).float()
                logits = torch.where(torch.isfinite(logits), logits, torch.full_like(logits, -torch.inf))
                acc.update(logits.cpu(), batch.labels.cpu(), (batch.mask & batch.label_mask).cpu())
        acc.all_reduce()
        return acc.compute()[self.cfg.metric]

    def _load(self) -> list:
        """This worker's held-out batches, at most its share of ``validation.max_requests``, the
        same number on every rank (a sharded lookup is a collective: all ranks run each batch)."""
        import ray.train

        run = self.run
        cap = math.ceil(self.cfg.max_requests / run.world)
        batches, requests = [], 0
        for batch in self.batches_of(ray.train.get_dataset_shard(VALID_DATASET)):
            if requests < cap:  # read to the end all the same: the split's other readers wait on it
                batches.append(batch)
                requests += batch.num_requests
        count = torch.tensor([len(batches)], dtype=torch.int64)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(count, op=dist.ReduceOp.MIN)
        return batches[:int(count.item())]

    def report_metrics(self) -> dict:
        """What a checkpoint of the current weights reports: its own score, the run's best and curve."""
        if not self.enabled:
            return {}
        p = self.run.progress
        # scored only as the run's best: a later checkpoint that scores higher within min_delta is
        # not an improvement, and must not outrank the one the patience counted from
        best = self.evaluated_at == p.global_step == p.valid_best_step and p.valid_best is not None
        own = p.valid_best if best else UNSCORED
        # None, not NaN, for what is undefined: the metrics end up in JSON (Ray's, the registry's)
        return {SCORE_KEY: own, "valid/best": p.valid_best,
                "valid/best_step": p.valid_best_step, "valid/evaluations": len(p.valid_curve),
                "valid/curve": [[step, value if math.isfinite(value) else None] for step, value in p.valid_curve],
                "train/stopped_early": float(p.stopped_early)}
