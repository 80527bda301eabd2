"""A checkpoint is the whole state: the models (reranker, plus the DNR generator or the DeGRe
evaluator; the reranker's running sketch of the real scores is one of its buffers), all their
optimizers (the fused table optimizers too), the typed training progress, the resolved config
and the data lineage.

One directory; in training every rank writes its part into its own directory and hands it to
``ray.train.report``, which gathers the parts into one checkpoint::

    model/          torch.distributed.checkpoint (DCP): every model's state dict and, for a
                    sharded model, its fused table-optimizer state. Each rank writes the rows it
                    holds (``__<rank>_0.distcp``); rank 0 writes the index (``.metadata``).
                    Loading reshards: any number of workers, or one process with whole tables.
    dense_state.pt  rank 0: the dense optimizers (AdamW; identical on every rank), the plain table
                    optimizers of unsharded models
    progress.json   TrainingProgress
    config.json     the resolved JobConfig
    lineage.json    parent version, data window, table version, rows read / quarantined

Nothing is unpickled from a checkpoint: tensors load with ``torch.load(weights_only=True)``;
DCP's index, a pickle, is read by :class:`SafeUnpickler`, which builds only DCP's own metadata
records and refuses every other global; DCP entries that are not tensors are refused.
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pyarrow.fs as pafs
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

from dnr.storage import Lake
from dnr.training.sharding import is_sharded
from dnr.training.step import TrainParts
from dnr.training.wrappers import unwrap

MODEL_DIR = "model"
DENSE_STATE_FILE = "dense_state.pt"
PROGRESS_FILE = "progress.json"
CONFIG_FILE = "config.json"
LINEAGE_FILE = "lineage.json"
METADATA_FILE = ".metadata"
MODEL_SLOTS = ("reranker", "generator", "evaluator")
"""The models of :class:`TrainParts` a checkpoint may hold."""


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint file holds something this project never writes (refused, never executed)."""


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

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainingProgress":
        return cls(**json.loads(text))


@dataclass
class LoadedCheckpoint:
    """A checkpoint's records, read without its tensors (:func:`restore` loads those)."""

    directory: Path
    progress: TrainingProgress
    config_json: str
    lineage: dict
    parts: frozenset[str]
    """What it holds: model slots, ``<slot>_opt`` (dense), ``<slot>_table_opt``."""


def save(directory: str | Path, parts: TrainParts, progress: TrainingProgress,
         config_json: str, lineage: dict, rank: int = 0) -> Path:
    """Write this rank's part of the checkpoint into local ``directory`` (created if needed).
    Collective when the models are sharded: every rank calls it, each with its own directory;
    Ray Train uploads them into one checkpoint (s3:// included) when they are reported."""
    if "://" in str(directory):
        raise ValueError(f"checkpoint.save writes a local directory, not {directory}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with _quiet_single_process():
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


def load(directory: str | Path) -> LoadedCheckpoint:
    """The records of the checkpoint in local ``directory`` and the list of what it holds."""
    directory = Path(directory)
    if not (directory / MODEL_DIR / METADATA_FILE).exists():
        old = " (an unsharded state.pt from before the sharded format: train a new model_name)" \
            if (directory / "state.pt").exists() else ""
        raise FileNotFoundError(f"checkpoint {directory}: no {MODEL_DIR}/{METADATA_FILE}{old}")
    stored = {key.split(".", 1)[0] for key in read_metadata(directory / MODEL_DIR).state_dict_metadata}
    stored |= set(_dense_state(directory))
    return LoadedCheckpoint(
        directory=directory,
        progress=TrainingProgress.from_json((directory / PROGRESS_FILE).read_text()),
        config_json=(directory / CONFIG_FILE).read_text(),
        lineage=json.loads((directory / LINEAGE_FILE).read_text()),
        parts=frozenset(stored),
    )


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
    dense = _dense_state(loaded.directory)
    for slot in MODEL_SLOTS:
        opt = getattr(parts, f"{slot}_opt", None)
        if opt is None or f"{slot}_opt" not in dense:
            continue
        opt.dense.load_state_dict(dense[f"{slot}_opt"])
        if opt.embedding is not None and not opt.fused and f"{slot}_table_opt" in dense:
            opt.embedding.load_state_dict(dense[f"{slot}_table_opt"])


def load_tensors(directory: str | Path, target: dict, distributed: bool = False) -> None:
    """Fill ``target`` (a nested dict of tensors, sharded or whole) in place from the DCP part of
    the checkpoint in ``directory``; whole tensors read every rank's rows."""
    reader = SafeReader(Path(directory) / MODEL_DIR)
    try:
        with _quiet_single_process():
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


@contextlib.contextmanager
def _quiet_single_process() -> Iterator[None]:
    # DCP warns on every single-process save or load that it assumes one process: that is the intent
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _dense_state(directory: Path) -> dict:
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


def prune_run_checkpoints(lake: Lake, registered_uri: str) -> list[str]:
    """Delete the run's other ``checkpoint_*`` directories (earlier periodic ones, and those of
    interrupted attempts, which Ray Train's ``num_to_keep`` does not see), keeping the registered
    one; returns what was deleted. Called once the version is in the registry."""
    fs = lake.filesystem()
    keep = lake.fs_path(registered_uri).rstrip("/")
    run_dir = keep.rsplit("/", 1)[0]
    selector = pafs.FileSelector(run_dir, allow_not_found=True)
    deleted = []
    for info in fs.get_file_info(selector):
        name = info.path.rstrip("/").rsplit("/", 1)[-1]
        if info.type == pafs.FileType.Directory and name.startswith("checkpoint_") \
                and info.path.rstrip("/") != keep:
            fs.delete_dir(info.path)
            deleted.append(info.path)
    return deleted
