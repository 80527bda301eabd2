"""Export the reranker (never the generator: it only exists in training) as a serving artifact.

An artifact is one directory::

    reranker.pt2    the torch.export program of :class:`dnr.serving.program.ServingProgram`:
                    raw int64 ids in, the training hash inside, logits [B, L] out; weights as
                    raw tensor bytes, no pickled payload (see :mod:`dnr.serving.archive`)
    manifest.json   format version, model version, the resolved config, the hashing
                    parameters, input names/dtypes/dynamic shapes and the sha256 of reranker.pt2

``torch.export`` rather than TorchScript: it traces the model's own Python forward (no scripting
constraints on ``dnr.models``), keeps B, L and H dynamic within declared ranges, and its archive
can be checked entry by entry before anything is deserialised.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import tempfile
from pathlib import Path

import torch
from torch import nn

from dnr.config import DataConfig, JobConfig, config_to_dict
from dnr.models.item_table import to_plain
from dnr.registry import Registry
from dnr.serving import hashing
from dnr.serving.artifact_format import (ARTIFACT_FILE, FORMAT, FORMAT_VERSION, INPUT_NAMES, INPUTS,
                                         MANIFEST_FILE, MAX_BATCH, OUTPUT)
from dnr.serving.program import ServingProgram
from dnr.storage import Lake


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _dims(data_cfg: DataConfig) -> dict[str, tuple[int, int]]:
    """Inclusive (min, max) of each dynamic dimension. H stops at ``history_len`` because training
    never pooled over more history than that: a longer history would be a train/serve skew."""
    return {"B": (1, MAX_BATCH), "L": (1, data_cfg.max_list_len), "H": (1, data_cfg.history_len)}


def _example_inputs(dims: dict[str, tuple[int, int]]) -> tuple[tuple[torch.Tensor, ...], dict]:
    """Example inputs and the ``dynamic_shapes`` spec of ``torch.export.export``.

    Example sizes are at least 2 where the range allows: export specialises a dimension whose
    example size is 1. A range of exactly one size (max_list_len or history_len of 1) is static.
    """
    size = {name: min(hi, max(lo, 2)) for name, (lo, hi) in dims.items()}
    spec = {name: (torch.export.Dim(name, min=lo, max=hi) if hi > lo else None)
            for name, (lo, hi) in dims.items()}
    gen = torch.Generator().manual_seed(0)
    tensors = []
    for name in INPUT_NAMES:
        dtype, shape, _ = INPUTS[name]
        sizes = tuple(size[d] for d in shape)
        if dtype == "int64":
            tensors.append(torch.randint(1, 1 << 40, sizes, generator=gen))
        elif dtype == "bool":
            tensors.append(torch.ones(sizes, dtype=torch.bool))
        else:
            tensors.append(torch.rand(sizes, generator=gen))
    dynamic = {name: {axis: spec[d] for axis, d in enumerate(INPUTS[name][1]) if spec[d] is not None}
               for name in INPUT_NAMES}
    return tuple(tensors), dynamic


def export_program(reranker: nn.Module, data_cfg: DataConfig) -> torch.export.ExportedProgram:
    """The ``ExportedProgram`` of hashing + ``reranker`` in eval mode, ready to save."""
    dims = _dims(data_cfg)
    args, dynamic = _example_inputs(dims)
    # the same weights behind a plain nn.Embedding: no TorchRec operator in the served program
    served = to_plain(reranker).eval()  # dropout off: the program is what serving runs
    with torch.no_grad():
        program = torch.export.export(ServingProgram(served, data_cfg), args, dynamic_shapes=dynamic)
    for node in program.graph.nodes:
        # Source locations of the exporting machine: not needed to serve, and not to be shipped.
        node.meta.pop("stack_trace", None)
    # Without example inputs the archive holds no pickle at all (torch.save would write them).
    program.example_inputs = None
    return program


def _manifest(cfg: JobConfig, version: str | None, artifact: Path) -> dict:
    dims = _dims(cfg.data)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_version": version,
        "family": cfg.model.family,
        "score_mode": cfg.model.score_mode,
        "config": config_to_dict(cfg),
        "hashing": {"algorithm": hashing.ALGORITHM, "num_buckets": cfg.data.num_buckets,
                    "hash_seed": cfg.data.hash_seed, "padding_bucket": 0,
                    "bucket": "splitmix64(uint64(id), hash_seed) mod (num_buckets - 1) + 1",
                    "note": "applied inside the program: pass raw int64 item ids"},
        "inputs": [{"name": name, "dtype": dtype, "shape": list(shape), "description": text}
                   for name, (dtype, shape, text) in INPUTS.items()],
        "output": OUTPUT,
        "dynamic_dims": {name: {"min": lo, "max": hi} for name, (lo, hi) in dims.items()},
        "max_list_len": cfg.data.max_list_len,
        "history_len": cfg.data.history_len,
        "torch_version": torch.__version__,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "artifact": {"file": ARTIFACT_FILE, "format": "torch.export", "bytes": artifact.stat().st_size,
                     "sha256": sha256_file(artifact)},
    }


def export_reranker(reranker: nn.Module, cfg: JobConfig, directory: str | Path, *,
                    version: str | None = None) -> Path:
    """Write ``reranker.pt2`` and ``manifest.json`` into ``directory`` (created); returns it.

    ``reranker`` is a model of ``cfg.model`` (e.g. from :func:`dnr.models.build_reranker`); its
    train/eval mode is left as it was.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    artifact = directory / ARTIFACT_FILE
    torch.export.save(export_program(reranker, cfg.data), artifact)
    manifest = _manifest(cfg, version, artifact)
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return directory


def load_version(lake: Lake, version: str, model_name: str = "dnr") -> tuple[str, JobConfig, nn.Module]:
    """(resolved version, config, reranker in eval mode) of a registry version or of
    ``"production"`` (the production version of ``model_name``), from its checkpoint."""
    from dnr.checkpoints.reader import load_reranker

    registry = Registry(lake)
    row = registry.production(model_name) if version == "production" else registry.get(version)
    if row is None:
        raise KeyError(f"no production version of model {model_name!r} in {registry.uri}")
    reranker, cfg = load_reranker(row.checkpoint_uri, lake)
    return row.version, cfg, reranker


def export_version(lake: Lake, version: str, out_uri: str | None = None, *, model_name: str = "dnr") -> str:
    """Export a registered version (or ``"production"``) to ``out_uri`` (default
    ``<lake>/serving/<version>/``, local or s3://); returns the URI written."""
    resolved, cfg, reranker = load_version(lake, version, model_name)
    out_uri = (out_uri or lake.uri("serving", resolved)).rstrip("/")
    if not lake.is_s3_uri(out_uri):
        export_reranker(reranker, cfg, out_uri, version=resolved)
        return out_uri
    import pyarrow.fs as pafs

    with tempfile.TemporaryDirectory(prefix="dnr-export-") as tmp:
        export_reranker(reranker, cfg, tmp, version=resolved)
        pafs.copy_files(tmp, lake.fs_path(out_uri), source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=lake.filesystem())
    return out_uri
