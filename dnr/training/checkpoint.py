"""Writing a checkpoint, and restoring one into training parts (resharding the tables to the
current workers). A checkpoint is the whole state: the models (reranker, plus the DNR generator or
the DeGRe evaluator; the reranker's running sketch of the real scores is one of its buffers), all
their optimizers (the fused table optimizers too), the typed training progress, the resolved
config and the data lineage; its layout and the safe reading are in :mod:`dnr.checkpoints.reader`.

In training every rank writes its part into its own directory and hands it to
``ray.train.report``, which gathers the parts into one checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemWriter

# the read side, used here and by the training loop through this module
from dnr.checkpoints.progress import TrainingProgress
from dnr.checkpoints.reader import (CONFIG_FILE, DENSE_STATE_FILE, LINEAGE_FILE, METADATA_FILE, MODEL_DIR,
                                    MODEL_SLOTS, PROGRESS_FILE, LoadedCheckpoint, UnsafeCheckpointError,
                                    dense_state, fetch, load, load_tensors, quiet_single_process, read_metadata)
from dnr.training.sharding import is_sharded
from dnr.training.step import TrainParts
from dnr.training.wrappers import unwrap

__all__ = ["CONFIG_FILE", "DENSE_STATE_FILE", "LINEAGE_FILE", "METADATA_FILE", "MODEL_DIR", "MODEL_SLOTS",
           "PROGRESS_FILE", "LoadedCheckpoint", "TrainingProgress", "UnsafeCheckpointError", "fetch", "load",
           "load_tensors", "read_metadata", "restore", "save"]


def save(directory: str | Path, parts: TrainParts, progress: TrainingProgress,
         config_json: str, lineage: dict, rank: int = 0) -> Path:
    """Write this rank's part of the checkpoint into local ``directory`` (created if needed).
    Collective when the models are sharded: every rank calls it, each with its own directory;
    Ray Train uploads them into one checkpoint (s3:// included) when they are reported."""
    if "://" in str(directory):
        raise ValueError(f"checkpoint.save writes a local directory, not {directory}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with quiet_single_process():
        dcp.save(_model_state(parts), storage_writer=FileSystemWriter(directory / MODEL_DIR),
                 no_dist=not _distributed(parts))
    if rank != 0:
        return directory
    dense: dict[str, Any] = {}
    for slot in MODEL_SLOTS:
        opt = getattr(parts, f"{slot}_opt", None)
        if opt is not None:
            dense[f"{slot}_opt"] = opt.dense.state_dict()
            if opt.embedding is not None and not opt.fused:
                dense[f"{slot}_table_opt"] = opt.embedding.state_dict()
    torch.save(dense, directory / DENSE_STATE_FILE)
    (directory / PROGRESS_FILE).write_text(progress.to_json())
    (directory / CONFIG_FILE).write_text(config_json)
    (directory / LINEAGE_FILE).write_text(json.dumps(lineage, sort_keys=True))
    return directory


def restore(parts: TrainParts, loaded: LoadedCheckpoint) -> None:
    """Load models (the reranker's score sketch with it) and optimizers into freshly built (and, for
    training, already distributed) parts, resharding the tables to the current workers. A part
    the checkpoint lacks, e.g. a DeGRe evaluator added later, keeps its fresh weights."""
    target = {key: value for key, value in _model_state(parts).items() if key in loaded.parts}
    for slot in MODEL_SLOTS:
        opt = getattr(parts, f"{slot}_opt", None)
        if opt is not None and opt.fused and slot in target and f"{slot}_table_opt" not in target:
            raise ValueError(f"checkpoint {loaded.directory}: {slot} was saved unsharded (its table "
                             "optimizer state is not in the sharded layout); it cannot warm-start sharded training")
    load_tensors(loaded.directory, target, distributed=_distributed(parts))
    for slot in MODEL_SLOTS:
        if slot in target:
            unwrap(getattr(parts, slot)).load_state_dict(target[slot])
    dense = dense_state(loaded.directory)
    for slot in MODEL_SLOTS:
        opt = getattr(parts, f"{slot}_opt", None)
        if opt is None or f"{slot}_opt" not in dense:
            continue
        opt.dense.load_state_dict(dense[f"{slot}_opt"])
        if opt.embedding is not None and not opt.fused and f"{slot}_table_opt" in dense:
            opt.embedding.load_state_dict(dense[f"{slot}_table_opt"])


# ---- what goes where ----


def _model_state(parts: TrainParts) -> dict[str, Any]:
    """The DCP part: model state dicts (ShardedTensor for sharded tables) and fused optimizer
    states, keyed by slot."""
    state: dict[str, Any] = {}
    for slot in MODEL_SLOTS:
        model = getattr(parts, slot, None)
        if model is None:
            continue
        state[slot] = _unwrapped_state(model)
        opt = getattr(parts, f"{slot}_opt")
        if opt is not None and opt.fused:
            state[f"{slot}_table_opt"] = opt.embedding.state_dict()["state"]
    return state


def _unwrapped_state(model: torch.nn.Module) -> dict[str, Any]:
    """State dict with the keys of the plain model (DMP's own state_dict already has them)."""
    return model.state_dict() if is_sharded(model) else unwrap(model).state_dict()


def _distributed(parts: TrainParts) -> bool:
    return any(is_sharded(getattr(parts, slot)) for slot in MODEL_SLOTS if getattr(parts, slot) is not None)
