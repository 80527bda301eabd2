"""Metric sinks behind one tiny interface: ``log(step, scalars)`` / ``histogram`` / ``close``.

Rank 0 writes TensorBoard event files under ``<lake>/tensorboard/<run>``. On S3 the writer
writes to a local staging directory that is copied to the lake at every checkpoint and at the
end (TensorBoard's own writer only writes local files).
"""

from __future__ import annotations

import shutil
import tempfile
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
