"""The read side of checkpoints: the progress record (:mod:`.progress`) and the safe reader
(:mod:`.reader`: records, tensors, :func:`~dnr.checkpoints.reader.load_reranker`).

Runs in any process that reads a checkpoint: a Train worker resuming or warm-starting, a replay
scorer, the serving export, a test. It touches local files and the lake's storage (to fetch an
``s3://`` checkpoint), never Ray, a process group or the registry. Writing and resharding into
training parts stay with training (:mod:`dnr.training.checkpoint`).
"""

from dnr.checkpoints.progress import TrainingProgress
from dnr.checkpoints.reader import (LoadedCheckpoint, UnsafeCheckpointError, fetch, load, load_reranker,
                                    load_tensors, read_metadata)

__all__ = ["LoadedCheckpoint", "TrainingProgress", "UnsafeCheckpointError", "fetch", "load", "load_reranker",
           "load_tensors", "read_metadata"]
