"""Metric sinks behind one tiny interface: ``log(step, scalars)`` / ``histogram`` / ``close``.

Rank 0 writes TensorBoard event files under ``<lake>/tensorboard/<run>``. On S3 the writer
writes to a local staging directory that is copied to the lake at every checkpoint and at the
end (TensorBoard's own writer only writes local files).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pyarrow.fs as pafs
import torch

from dnr.storage import Lake


class TensorBoardLogger:
    def __init__(self, lake: Lake, run_name: str):
        from torch.utils.tensorboard import SummaryWriter

        self.lake = lake
        self.uri = lake.uri("tensorboard", run_name)
        self._staging = Path(tempfile.mkdtemp(prefix="dnr-tb-")) if lake.is_s3 else None
        self.writer = SummaryWriter(log_dir=str(self._staging or self.uri))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)

    def histogram(self, step: int, key: str, values: torch.Tensor) -> None:
        if values.numel():
            self.writer.add_histogram(key, values.detach().float().cpu(), step, bins="auto")

    def sync(self) -> None:
        """Flush, and on S3 copy the event files to the lake."""
        self.writer.flush()
        if self._staging is not None:
            pafs.copy_files(str(self._staging), self.lake.fs_path(self.uri),
                            source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=self.lake.filesystem())

    def close(self) -> None:
        self.sync()
        self.writer.close()
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)


class ConsoleProgress:
    """One line per log step: step, epoch, losses, requests/s, ETA for the run."""

    def __init__(self, total_steps: int | None):
        self.total_steps = total_steps
        self.start = time.monotonic()

    def line(self, step_in_run: int, global_step: int, epoch: int, scalars: dict[str, float],
             requests_per_s: float) -> str:
        elapsed = time.monotonic() - self.start
        eta = ""
        if self.total_steps and step_in_run:
            remaining = max(self.total_steps - step_in_run, 0) * elapsed / step_in_run
            eta = f" | {step_in_run}/{self.total_steps} steps, ETA {remaining:5.0f}s"
        losses = " ".join(f"{k.split('/')[-1]}={v:.4f}" for k, v in scalars.items() if "loss" in k)
        return (f"[train] step {global_step} epoch {epoch} | {losses} | "
                f"{requests_per_s:,.0f} req/s | {elapsed:5.0f}s{eta}")
