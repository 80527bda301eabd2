"""The ``validation`` section of the config tree (a module of its own only to keep
:mod:`dnr.config.sections` small; import it from :mod:`dnr.config`)."""

from __future__ import annotations

from dataclasses import dataclass

from dnr.config.sections import _METRIC, _check


@dataclass(frozen=True)
class ValidationConfig:
    """The run's own held-out slice: evaluated during training, it picks the checkpoint that is
    registered and stops the run when it stops improving (dnr.training.validation).

    The slice is a hashed ``fraction`` of the window's valid requests (by request_id, so the
    same request is held out by every run and on every worker count), never trained on.
    """

    fraction: float = 0.0
    """Share of the window's requests held out; 0 turns validation off (the last checkpoint is
    registered). Held-out requests are never trained on by any version."""
    every_steps: int = 50
    """Steps of this run between two evaluations; every epoch's end is evaluated too."""
    patience: int = 3
    """Evaluations without an improvement after which the run stops; 0: never stop early."""
    min_delta: float = 0.0
    """Smallest rise of the metric that counts as an improvement."""
    metric: str = "N@6"
    """What the evaluation compares (the per-request metrics of dnr.metrics)."""
    max_requests: int = 50_000
    """Held-out requests evaluated at most (split across workers, kept in each one's memory)."""

    def __post_init__(self):
        _check(0.0 <= self.fraction < 1.0, "validation.fraction", self.fraction, "must be in [0, 1)")
        _check(self.every_steps >= 1, "validation.every_steps", self.every_steps, "must be >= 1")
        _check(self.patience >= 0, "validation.patience", self.patience, "must be >= 0 (0: never stop)")
        _check(self.min_delta >= 0.0, "validation.min_delta", self.min_delta, "must be >= 0")
        _check(_METRIC.fullmatch(self.metric) is not None, "validation.metric", self.metric,
               "must be H@K, N@K, M@K, F1@K or AUC")
        _check(self.max_requests >= 1, "validation.max_requests", self.max_requests, "must be >= 1")
