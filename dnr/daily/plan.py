"""What a daily run decides before and after it trains, as pure functions of the registry's
parent, the table's partitions and the config: the window of days (:func:`plan_window`, cut by
``train.max_window_days`` in :func:`cap_window`), the steps of an epoch, and the check that the
stream delivered every kept request (:func:`check_trained`). Used by :mod:`dnr.daily.run`."""

from __future__ import annotations

import datetime as dt

import numpy as np

from dnr.config import JobConfig
from dnr.registry import ModelVersion


def plan_window(partitions: list[str], parent: ModelVersion | None, ds: str) -> tuple[str, str] | None:
    """(start, end) of the partitions to train on for day ``ds``, or None when there are none."""
    end = (dt.date.fromisoformat(ds) - dt.timedelta(days=1)).isoformat()
    after = parent.window_end if parent is not None and parent.window_end else None
    days = [p for p in partitions if p <= end and (after is None or p > after)]
    return (days[0], days[-1]) if days else None


def cap_window(partitions: list[str], window: tuple[str, str], max_days: int
               ) -> tuple[tuple[str, str], list[str]]:
    """The window cut to its newest ``max_days`` partitions (0: no limit), and the days cut."""
    days = [p for p in partitions if window[0] <= p <= window[1]]
    if not max_days or len(days) <= max_days:
        return window, []
    return (days[-max_days], days[-1]), days[:-max_days]


def full_steps_per_epoch(rows: int, cfg: JobConfig) -> int:
    """Steps of one epoch over ``rows`` requests split across the workers."""
    per_worker = int(np.ceil(rows / cfg.train.num_workers))
    return int(np.ceil(per_worker / cfg.data.batch_size))


def steps_per_epoch(rows: int, cfg: JobConfig) -> int:
    """What one epoch runs: the full count, capped by ``train.max_steps`` when set."""
    steps = full_steps_per_epoch(rows, cfg)
    return min(steps, cfg.train.max_steps) if cfg.train.max_steps else steps


def check_trained(metrics: dict, kept: int, cfg: JobConfig, run_name: str) -> int:
    """Kept requests left out of each epoch; raises when more are missing than the equal split
    of the stream can drop (``W - 1``): then the stream did not deliver what was validated."""
    trained = metrics.get("train/requests_epoch")
    if trained is None:  # a finished run handed back again: its epochs were checked when they ran
        return 0
    left_out = max(kept - int(trained), 0)
    if left_out > cfg.train.num_workers - 1:
        raise RuntimeError(f"run {run_name} trained {int(trained):,} requests per epoch, but "
                           f"{kept:,} rows were kept by validation: {left_out:,} are missing (the "
                           f"equal split across {cfg.train.num_workers} workers drops at most "
                           f"{cfg.train.num_workers - 1}). Nothing was registered.")
    return left_out
