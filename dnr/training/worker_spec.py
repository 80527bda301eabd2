"""What the daily driver hands every Ray Train worker of one run: a frozen, typed spec.

Ray Train passes ``train_loop_config`` (a dict) to each worker; the driver puts one
:class:`WorkerSpec` in it (:meth:`WorkerSpec.loop_config`) and the worker loop takes it out
(:meth:`WorkerSpec.of`), so every field is named and typed on both sides.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from dnr.config import JobConfig


@dataclass(frozen=True)
class Lineage:
    """Where a run's data came from; written into every checkpoint (``lineage.json``)."""

    parent_version: str | None
    window_start: str
    window_end: str
    table_version: int
    rows_read: int
    rows_quarantined: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class WorkerSpec:
    """One training run, as each worker sees it."""

    config: JobConfig
    lake_root: str
    run_name: str
    lineage: Lineage
    parent_checkpoint: str | None = None
    """The parent version's checkpoint (a warm start); None: cold start."""
    steps_per_epoch: int = 0
    """Steps each epoch takes on every worker (0: unknown; the progress bar has no total)."""
    progress_board: Any = None
    """The driver's ``ProgressBoard`` actor handle (rank 0 posts to it), or None."""

    def loop_config(self) -> dict:
        """The ``train_loop_config`` of ``TorchTrainer``."""
        return {"spec": self}

    @staticmethod
    def of(loop_config: dict) -> WorkerSpec:
        spec = loop_config.get("spec")
        if not isinstance(spec, WorkerSpec):
            raise TypeError(f"train_loop_config must be WorkerSpec.loop_config(), got keys {sorted(loop_config)}")
        return spec
