"""The training progress record of a checkpoint (``progress.json``): where a model is in its
lifetime and in its current run. JSON in and out; read by the replay and the export through
:mod:`dnr.checkpoints.reader`, and changed only by its own methods, which the training loop calls.

Two step counters, and what follows each:

* the **lifetime** step, ``global_step``: the optimisation steps of the model since its cold
  start, over every daily run. It drives what belongs to the model: DNR's switch to the learned
  generator (``switch_step``), the per-worker seeds, the x-axis of TensorBoard (the curves of
  successive runs continue one another) and the ``global_step`` recorded in the registry.
* the **run's** step, :meth:`TrainingProgress.run_step`: the steps of this daily run, the same
  after a resume. It drives the cadences of the run: the learning-rate schedule (warm-up and
  decay over this run's steps), validation (``validation.every_steps``), logging
  (``train.log_every_steps``) and periodic checkpoints (``train.checkpoint_every_steps``), so a
  warm-started run behaves like a cold one whatever its parent's age.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace


@dataclass
class TrainingProgress:
    """Where a model is in its lifetime; persisted so daily runs continue where it stopped."""

    global_step: int = 0
    """Optimisation steps over the model's whole lifetime (drives the lambda_e switch)."""
    switch_step: int = -1
    """Lifetime global step at which DNR's learned generator takes over, fixed by the model's first
    run (``dnr.lambda_e``, or ``dnr.lambda_e_epochs`` of that run's epochs); -1: not fixed yet."""
    phase: str = "heuristic"
    """heuristic (stage 1: only the reranker learns) or adversarial (stage 2); distill for degre."""
    run_name: str = ""
    """The run the counters below belong to; a new daily run resets them."""
    epoch: int = 0
    """Epochs of this run completed."""
    step_in_epoch: int = 0
    """Steps of the current epoch completed (a resumed epoch skips this many batches)."""
    requests_seen: int = 0
    """Requests trained on over the lifetime, summed over workers."""
    requests_in_epoch: int = 0
    """Requests of the current epoch trained as of this checkpoint, summed over workers."""
    num_workers: int = 0
    """Workers of the run that wrote this checkpoint (0: unknown, an older record). A resume on
    another count skips ``requests_in_epoch`` requests rather than ``step_in_epoch`` batches."""
    watermark: str | None = None
    """Last ds trained on (inclusive): the next daily run starts the day after."""
    seed: int = 0
    """Base seed; each worker seeds torch with (seed, rank, global_step at start)."""
    restarts: int = 0
    """Times this run resumed from its own checkpoint after a failure (0 for a clean run)."""
    history: list = field(default_factory=list)
    """One entry per completed run: {run_name, window_start, window_end, steps}."""
    valid_curve: list = field(default_factory=list)
    """This run's validation: [global_step, metric] per evaluation (dnr.training.validation)."""
    valid_best: float | None = None
    """Best validation metric of this run after a step (None: not evaluated yet)."""
    valid_best_step: int = 0
    """Global step of ``valid_best``: the checkpoint the run registers."""
    valid_since_best: int = 0
    """Evaluations since ``valid_best`` without an improvement (the patience counter)."""
    stopped_early: bool = False
    """The run stopped when validation stopped improving (before its last epoch's end)."""

    # -- the only writers -----------------------------------------------------------------------

    def run_step(self, steps_per_epoch: int) -> int:
        """Steps of this run done (the same after a resume: it comes from the record)."""
        return self.epoch * steps_per_epoch + self.step_in_epoch

    def warm_start(self, run_name: str, seed: int) -> "TrainingProgress":
        """The record a new run continues from its parent's: the lifetime kept (steps, switch,
        requests, history, watermark), this run's counters and validation fresh."""
        return replace(self, run_name=run_name, seed=seed, epoch=0, step_in_epoch=0, requests_in_epoch=0,
                       restarts=0, valid_curve=[], valid_best=None, valid_best_step=0, valid_since_best=0,
                       stopped_early=False)

    def fix_switch_step(self, explicit: int, first_run: int) -> int:
        """The lifetime step of DNR's switch: ``explicit`` when set (>= 0), else the one the
        model's first run fixed, else (this is the first run) ``first_run``. Returns it."""
        if explicit >= 0:
            self.switch_step = explicit
        elif self.switch_step < 0:
            self.switch_step = first_run
        return self.switch_step

    def resume(self) -> None:
        """This run resumes from its own checkpoint after a failure."""
        self.restarts += 1

    def start_attempt(self, workers: int, skip: int) -> None:
        """An attempt starts on ``workers`` workers, skipping ``skip`` batches of the current epoch."""
        self.step_in_epoch, self.num_workers = skip, workers

    def advance(self, phase: str) -> None:
        """One optimisation step done; ``phase``: what the model's family is in after it."""
        self.global_step += 1
        self.step_in_epoch += 1
        self.phase = phase

    def count_requests(self, requests: int) -> None:
        """Requests of every worker trained in this epoch since the last count (at a checkpoint)."""
        self.requests_in_epoch += requests

    def end_epoch(self, requests: int) -> int:
        """Close the epoch (``requests``: every worker's since the last count); returns the
        epoch's requests."""
        seen = self.requests_in_epoch + requests
        self.requests_seen += seen
        self.requests_in_epoch, self.step_in_epoch = 0, 0
        self.epoch += 1
        return seen

    def record_validation(self, value: float, candidate: bool, min_delta: float, patience: int) -> bool:
        """Add an evaluation at the current step to the curve; a ``candidate`` (not the run's
        starting point) that beats the best by more than ``min_delta`` becomes the best, else it
        counts towards ``patience`` (0: never stop). Returns whether the best improved."""
        self.valid_curve.append([self.global_step, value])
        improved = candidate and math.isfinite(value) and (self.valid_best is None
                                                           or value > self.valid_best + min_delta)
        if improved:
            self.valid_best, self.valid_best_step, self.valid_since_best = value, self.global_step, 0
        elif candidate:
            self.valid_since_best += 1
            self.stopped_early = bool(patience) and self.valid_since_best >= patience
        return improved

    def complete(self, epochs: int, window_start: str, window_end: str, steps: int) -> None:
        """The run is complete (its last epoch ended, or validation stopped it): the watermark
        moves to the window's end, and a re-run has nothing left to train."""
        self.epoch = epochs
        self.watermark = window_end
        self.history.append({"run_name": self.run_name, "steps": steps,
                             "window_start": window_start, "window_end": window_end})

    # -- persistence ------------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainingProgress":
        return cls(**json.loads(text))
