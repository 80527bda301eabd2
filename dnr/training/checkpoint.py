"""A checkpoint is the whole state: the models (reranker, plus the DNR generator or the DeGRe
evaluator), their optimizers, the running real-score distribution, the typed training progress, the resolved config and the data lineage.

One directory, written by rank 0 and handed to ``ray.train.report``::

    state.pt        tensors only (state dicts), loaded with ``torch.load(weights_only=True)``:
                    a checkpoint can never make us unpickle arbitrary objects
    progress.json   TrainingProgress
    config.json     the resolved JobConfig
    lineage.json    parent version, data window, table version, rows read / quarantined
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from dnr.storage import Lake
from dnr.training.step import TrainParts, unwrap

STATE_FILE = "state.pt"
PROGRESS_FILE = "progress.json"
CONFIG_FILE = "config.json"
LINEAGE_FILE = "lineage.json"


@dataclass
class TrainingProgress:
    """Where a model is in its lifetime; persisted so daily runs continue where it stopped."""

    global_step: int = 0
    """Optimisation steps over the model's whole lifetime (drives the lambda_e switch)."""
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
    watermark: str | None = None
    """Last ds trained on (inclusive): the next daily run starts the day after."""
    seed: int = 0
    """Base seed; each worker seeds torch with (seed, rank, global_step at start)."""
    restarts: int = 0
    """Times this run resumed from its own checkpoint after a failure (0 for a clean run)."""
    history: list = field(default_factory=list)
    """One entry per completed run: {run_name, window_start, window_end, steps}."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainingProgress":
        return cls(**json.loads(text))


@dataclass
class LoadedCheckpoint:
    state: dict
    progress: TrainingProgress
    config_json: str
    lineage: dict


def save(directory: str | Path, parts: TrainParts, progress: TrainingProgress,
         config_json: str, lineage: dict) -> Path:
    """Write the checkpoint files into local ``directory`` (created if needed); Ray Train
    uploads it to the run's storage (s3:// included) when it is reported."""
    if "://" in str(directory):
        raise ValueError(f"checkpoint.save writes a local directory, not {directory}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {"reranker": unwrap(parts.reranker).state_dict(),
             "reranker_opt": parts.reranker_opt.state_dict()}
    if parts.generator is not None:
        state["generator"] = unwrap(parts.generator).state_dict()
        state["generator_opt"] = parts.generator_opt.state_dict()
    if parts.real_scores is not None:
        state["real_scores"] = parts.real_scores.state_dict()
    if parts.evaluator is not None:
        state["evaluator"] = unwrap(parts.evaluator).state_dict()
        state["evaluator_opt"] = parts.evaluator_opt.state_dict()
    torch.save(state, directory / STATE_FILE)
    (directory / PROGRESS_FILE).write_text(progress.to_json())
    (directory / CONFIG_FILE).write_text(config_json)
    (directory / LINEAGE_FILE).write_text(json.dumps(lineage, sort_keys=True))
    return directory


def load(directory: str | Path) -> LoadedCheckpoint:
    directory = Path(directory)
    state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
    return LoadedCheckpoint(
        state=state,
        progress=TrainingProgress.from_json((directory / PROGRESS_FILE).read_text()),
        config_json=(directory / CONFIG_FILE).read_text(),
        lineage=json.loads((directory / LINEAGE_FILE).read_text()),
    )


def restore(parts: TrainParts, loaded: LoadedCheckpoint) -> None:
    """Load models, optimizers and the real-score distribution into freshly built parts (a part
    the checkpoint lacks, e.g. a DeGRe evaluator added later, keeps its fresh weights)."""
    unwrap(parts.reranker).load_state_dict(loaded.state["reranker"])
    parts.reranker_opt.load_state_dict(loaded.state["reranker_opt"])
    if parts.generator is not None and "generator" in loaded.state:
        unwrap(parts.generator).load_state_dict(loaded.state["generator"])
        parts.generator_opt.load_state_dict(loaded.state["generator_opt"])
    if parts.real_scores is not None and "real_scores" in loaded.state:
        parts.real_scores.load_state_dict(loaded.state["real_scores"])
    if parts.evaluator is not None and "evaluator" in loaded.state:
        unwrap(parts.evaluator).load_state_dict(loaded.state["evaluator"])
        parts.evaluator_opt.load_state_dict(loaded.state["evaluator_opt"])


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
    """(reranker in eval mode, its JobConfig) from the checkpoint at ``uri``: tensors only
    (``weights_only``), the config from ``config.json``; an s3:// download is removed after."""
    from dnr.config import config_from_dict
    from dnr.models import build_reranker

    local = fetch(uri, lake)
    try:
        loaded = load(local)
    finally:
        if lake.is_s3_uri(uri):
            shutil.rmtree(local, ignore_errors=True)
    cfg = config_from_dict(json.loads(loaded.config_json))
    model = build_reranker(cfg.model, cfg.data)
    model.load_state_dict(loaded.state["reranker"])
    return model.eval(), cfg
