"""How a public ratings file becomes request logs (:class:`PublicDataConfig`): a module of its
own so that the retriever (:mod:`dnr.datasets.public_retriever`) and the log builder
(:mod:`dnr.datasets.public`) both read it without importing each other."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from dnr.datasets.interactions import FORMATS

_SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class PublicDataConfig:
    """How a ratings file becomes request logs."""

    fmt: str = "auto"
    """File format, one of FORMATS; ``auto`` detects it from the extension and first line."""
    min_rating: float = 4.0
    """A future rating at or above this is a positive label (ignored for files without ratings)."""
    days: int = 30
    """Consecutive UTC days the written requests are spread over (equal-count days)."""
    start_date: str | None = None
    """First ds (YYYY-MM-DD); default: the UTC date of the first written request's real time."""
    candidates: int = 50
    """Candidates per request (fewer when the user has seen almost every known item)."""
    history_len: int = 50
    """Most recent seen items kept as the history (also the retriever's user input)."""
    retriever_fraction: float = 0.7
    """Earliest share of interactions the retriever is trained on."""
    calibration_fraction: float = 0.1
    """Next share of interactions; its requests whose label window closes before the written
    period calibrate the scores (they are not written)."""
    session_gap_hours: float = 1.0
    """A gap longer than this between a user's interactions starts a new request."""
    label_window_days: float = 7.0
    """Future window after the request time in which ratings make labels."""
    min_history: int = 1
    """Requests need at least this many earlier interactions (0 keeps cold-start requests)."""
    seed: int = 0
    """Seed of the retriever's initialisation and negative sampling."""
    dim: int = 64
    """Retriever factor dimension."""
    epochs: int = 5
    """Retriever training epochs over the retriever period's positive interactions."""
    batch_size: int = 1024
    lr: float = 0.01
    l2: float = 1e-2
    """L2 penalty on the factors a BPR step touches; strong, because on a time split the future
    is closer to popularity than to a user's past (weaker: higher AUC, lower recall)."""

    def __post_init__(self):
        checks = [
            (self.fmt in FORMATS, "fmt", f"one of {FORMATS}"),
            (self.days >= 1, "days", ">= 1"),
            (self.candidates >= 1, "candidates", ">= 1"),
            (self.history_len >= 1, "history_len", ">= 1"),
            (0 < self.retriever_fraction < 1, "retriever_fraction", "in (0, 1)"),
            (0 < self.calibration_fraction < 1 - self.retriever_fraction, "calibration_fraction",
             "in (0, 1 - retriever_fraction)"),
            (self.session_gap_hours >= 0, "session_gap_hours", ">= 0"),
            (self.label_window_days > 0, "label_window_days", "> 0"),
            (self.min_history >= 0, "min_history", ">= 0"),
            (self.dim >= 1 and self.epochs >= 1 and self.batch_size >= 1, "dim/epochs/batch_size", ">= 1"),
        ]
        for ok, name, want in checks:
            if not ok:
                raise ValueError(f"public data config {name}={getattr(self, name, None)!r}: must be {want}")
        if self.start_date is not None:
            dt.date.fromisoformat(self.start_date)

    @property
    def label_window_s(self) -> int:
        return int(self.label_window_days * _SECONDS_PER_DAY)
