"""Reading a checkpoint, with nothing unpickled: its records, its tensors, and the reranker alone
for scoring and export.

Layout (written by :func:`dnr.training.checkpoint.save`)::

    model/          torch.distributed.checkpoint (DCP): every model's state dict and, for a
                    sharded model, its fused table-optimizer state. Each rank writes the rows it
                    holds (``__<rank>_0.distcp``); rank 0 writes the index (``.metadata``).
                    Loading reshards: any number of workers, or one process with whole tables.
    dense_state.pt  rank 0: the dense optimizers (AdamW; identical on every rank), the plain table
                    optimizers of unsharded models
    progress.json   TrainingProgress (:mod:`dnr.checkpoints.progress`)
    config.json     the resolved JobConfig
    lineage.json    parent version, data window, table version, rows read / quarantined

Nothing is unpickled from a checkpoint: tensors load with ``torch.load(weights_only=True)``;
DCP's index, a pickle, is read by :class:`SafeUnpickler`, which builds only DCP's own metadata
records and refuses every other global; DCP entries that are not tensors are refused.

This module needs torch and the models, not the training stack (steps, sharding, Ray Train):
the replay's scorers and the serving export load a reranker through :func:`load_reranker`.
"""

from __future__ import annotations

import contextlib
import io
import json
import pathlib
import pickle
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

from dnr.checkpoints.progress import TrainingProgress
from dnr.storage import Lake

MODEL_DIR = "model"
DENSE_STATE_FILE = "dense_state.pt"
PROGRESS_FILE = "progress.json"
CONFIG_FILE = "config.json"
LINEAGE_FILE = "lineage.json"
METADATA_FILE = ".metadata"
MODEL_SLOTS = ("reranker", "generator", "evaluator")
"""The models a checkpoint may hold (the slots of :class:`dnr.training.step.TrainParts`)."""


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint file holds something this project never writes (refused, never executed)."""


@dataclass
class LoadedCheckpoint:
    """A checkpoint's records, read without its tensors (:func:`restore` loads those)."""

    directory: Path
    progress: TrainingProgress
    config_json: str
    lineage: dict
    parts: frozenset[str]
    """What it holds: model slots, ``<slot>_opt`` (dense), ``<slot>_table_opt``."""


def load(directory: str | Path) -> LoadedCheckpoint:
    """The records of the checkpoint in local ``directory`` and the list of what it holds."""
    directory = Path(directory)
    if not (directory / MODEL_DIR / METADATA_FILE).exists():
        old = " (an unsharded state.pt from before the sharded format: train a new model_name)" \
            if (directory / "state.pt").exists() else ""
        raise FileNotFoundError(f"checkpoint {directory}: no {MODEL_DIR}/{METADATA_FILE}{old}")
    stored = {key.split(".", 1)[0] for key in read_metadata(directory / MODEL_DIR).state_dict_metadata}
    stored |= set(dense_state(directory))
    return LoadedCheckpoint(
        directory=directory,
        progress=TrainingProgress.from_json((directory / PROGRESS_FILE).read_text()),
        config_json=(directory / CONFIG_FILE).read_text(),
        lineage=json.loads((directory / LINEAGE_FILE).read_text()),
        parts=frozenset(stored),
    )


def load_tensors(directory: str | Path, target: dict, distributed: bool = False) -> None:
    """Fill ``target`` (a nested dict of tensors, sharded or whole) in place from the DCP part of
    the checkpoint in ``directory``; whole tensors read every rank's rows."""
    reader = SafeReader(Path(directory) / MODEL_DIR)
    try:
        with quiet_single_process():
            dcp.load(target, storage_reader=reader, planner=TensorsOnlyPlanner(), no_dist=not distributed)
    except CheckpointException as error:  # a BaseException that wraps each rank's failure
        failures = [failure for failure, _ in error.failures.values()]
        unsafe = [f for f in failures if isinstance(f, UnsafeCheckpointError)]
        if unsafe:
            raise UnsafeCheckpointError(f"checkpoint {directory}: {unsafe[0]}") from None
        raise RuntimeError(f"checkpoint {directory}: loading {MODEL_DIR}/ failed: {failures[0]!r}") from error


def fetch(uri: str, lake: Lake) -> Path:
    """A local copy of a checkpoint directory (local path: itself; s3://: downloaded)."""
    if not lake.is_s3_uri(uri):
        return Path(uri)
    import pyarrow.fs as pafs

    target = Path(tempfile.mkdtemp(prefix="dnr-ckpt-"))
    pafs.copy_files(lake.fs_path(uri), str(target), source_filesystem=lake.filesystem(),
                    destination_filesystem=pafs.LocalFileSystem())
    return target


def load_reranker(uri: str, lake: Lake):
    """(reranker in eval mode with whole tables, its JobConfig) from the checkpoint at ``uri``,
    sharded or not, in one process; an s3:// download is removed after."""
    from dnr.config import config_from_dict
    from dnr.models import build_reranker

    local = fetch(uri, lake)
    try:
        loaded = load(local)
        cfg = config_from_dict(json.loads(loaded.config_json))
        model = build_reranker(cfg.model, cfg.data)
        state = {"reranker": model.state_dict()}
        load_tensors(local, state)
        model.load_state_dict(state["reranker"])
    finally:
        if lake.is_s3_uri(uri):
            shutil.rmtree(local, ignore_errors=True)
    return model.eval(), cfg


# ---- the safe readers ----


class SafeUnpickler(pickle.Unpickler):
    """Unpickles DCP's ``.metadata`` index: only the records DCP writes there, nothing callable
    beyond their constructors."""

    ALLOWED = {
        "torch.distributed.checkpoint.metadata": {
            "Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata",
            "MetadataIndex", "TensorProperties", "StorageMeta", "_MEM_FORMAT_ENCODING"},
        "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
        "torch.serialization": {"_get_layout"},
        "torch": {"Size"},
        "pathlib": {"PosixPath", "PurePosixPath"},
        "collections": {"OrderedDict"},
    }

    def __init__(self, file, source: str):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str):
        if name in self.ALLOWED.get(module, ()):
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise UnsafeCheckpointError(
            f"{self.source}: refused to load {module}.{name}: a checkpoint index holds only DCP metadata "
            "records, so this file was not written by this project's trainer. Do not load it with "
            "weights_only=False or pickle: delete it or restore it from a trusted copy")


class SafeReader(FileSystemReader):
    """DCP's file reader with the index read by :class:`SafeUnpickler`."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        metadata = read_metadata(Path(self.path))
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class TensorsOnlyPlanner(DefaultLoadPlanner):
    """DCP's load planner, refusing entries that are not tensors (DCP would ``torch.load`` them
    with ``weights_only=False``); this project writes none."""

    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        raise UnsafeCheckpointError(
            f"checkpoint entry {read_item.dest_index.fqn!r} is not a tensor: refused (this project "
            "writes only tensors into model/; restore the checkpoint from a trusted copy)")


def read_metadata(model_dir: Path) -> Metadata:
    path = pathlib.Path(model_dir) / METADATA_FILE
    with open(path, "rb") as f:
        metadata = SafeUnpickler(f, str(path)).load()
    if not isinstance(metadata, Metadata):
        raise UnsafeCheckpointError(f"{path}: not a DCP metadata record ({type(metadata).__name__})")
    return metadata


@contextlib.contextmanager
def quiet_single_process() -> Iterator[None]:
    # DCP warns on every single-process save or load that it assumes one process: that is the intent
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def dense_state(directory: Path) -> dict:
    path = directory / DENSE_STATE_FILE
    if not path.exists():
        return {}
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message ends by advising weights_only=False: for a refused file, the one wrong move
        raise UnsafeCheckpointError(
            f"{path}: refused: it holds objects that are not tensors ({str(error).splitlines()[-1][:200]}). "
            "This project writes only tensors there. Do not load it with weights_only=False or "
            "pickle: delete it or restore it from a trusted copy") from None
