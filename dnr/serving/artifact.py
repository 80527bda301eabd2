"""Load a serving artifact and score requests with it.

:func:`load_artifact` reads ``manifest.json`` (from a local directory or an ``s3://`` prefix),
refuses an unknown format version, reads ``reranker.pt2`` once into memory, checks its sha256
against the manifest and its contents with :func:`dnr.serving.archive.check_archive`, and only
then hands those same bytes to ``torch.export.load``. Loading never unpickles anything (the
archive check refuses every pickled payload) and never runs code from the file beyond aten
operators.

Loading and scoring import torch, numpy and :mod:`dnr.config` (for the manifest's config) and
nothing of training: not the models, the registry, nor :mod:`dnr.data`
(:meth:`ServingReranker.score_table` and :func:`max_abs_difference`, which take request-log rows,
import the training collate when called). The lake's filesystem (:mod:`dnr.storage`, pyarrow) is
imported for an ``s3://`` artifact only. ``tests/unit/test_serving_imports.py`` keeps it so.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from dnr.config import JobConfig, config_from_dict
from dnr.serving.archive import ArtifactError, check_archive
from dnr.serving.artifact_format import ARTIFACT_FILE, FORMAT, FORMAT_VERSION, MANIFEST_FILE, MAX_BATCH

if TYPE_CHECKING:
    import pyarrow as pa

_S3_PREFIXES = ("s3://", "s3a://")
"""What :meth:`dnr.storage.Lake.is_s3_uri` calls S3, tested here without importing the lake."""


def _as_tensor(value, dtype: torch.dtype, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
    if tensor.dim() != 2:
        raise ValueError(f"{name} must be 2-D [B, ...], got shape {tuple(tensor.shape)}")
    if dtype == torch.int64 and tensor.dtype.is_floating_point:
        raise ValueError(f"{name} must hold integer item ids, got {tensor.dtype}")
    return tensor.to(dtype)


@dataclass
class ServingReranker:
    """An exported reranker: ``score(...)`` on arrays, ``score_table(...)`` on request-log rows."""

    program: nn.Module
    """The loaded program: (item_ids, mask, scores, history_ids, history_mask) -> logits [B, L].
    Call :meth:`score`: the program's own per-call input check is off (see ``load_artifact``)."""
    manifest: dict
    config: JobConfig

    @property
    def max_list_len(self) -> int:
        return self.config.data.max_list_len

    @property
    def history_len(self) -> int:
        return self.config.data.history_len

    def score(self, item_ids, scores, history_ids, mask=None, history_mask=None) -> torch.Tensor:
        """Logits [B, L] (``PAD_LOGIT`` where ``mask`` is False) for raw ids; numpy or torch.

        item_ids [B, L] int64 raw ids, retriever order; scores [B, L] in [0, 1]; history_ids
        [B, H] raw ids, most recent last (H = 0 is an empty history); mask [B, L] and
        history_mask [B, H] bool, default every position real. 1 <= L <= max_list_len and
        H <= history_len: longer lists or histories than training saw are refused, not cut.
        """
        item_ids = _as_tensor(item_ids, torch.int64, "item_ids")
        scores = _as_tensor(scores, torch.float32, "scores")
        history_ids = _as_tensor(history_ids, torch.int64, "history_ids")
        mask = torch.ones_like(item_ids, dtype=torch.bool) if mask is None else _as_tensor(mask, torch.bool, "mask")
        history_mask = (torch.ones_like(history_ids, dtype=torch.bool) if history_mask is None
                        else _as_tensor(history_mask, torch.bool, "history_mask"))
        batch, length = item_ids.shape
        if scores.shape != item_ids.shape or mask.shape != item_ids.shape:
            raise ValueError(f"item_ids {tuple(item_ids.shape)}, scores {tuple(scores.shape)} and mask "
                             f"{tuple(mask.shape)} must have the same shape [B, L]")
        if history_ids.shape[0] != batch or history_mask.shape != history_ids.shape:
            raise ValueError(f"history_ids {tuple(history_ids.shape)} and history_mask "
                             f"{tuple(history_mask.shape)} must be [B={batch}, H]")
        if batch > MAX_BATCH:
            raise ValueError(f"batch of {batch} requests > {MAX_BATCH}: split it")
        if not 1 <= length <= self.max_list_len:
            raise ValueError(f"list length {length} outside 1..data.max_list_len={self.max_list_len}")
        if history_ids.shape[1] > self.history_len:
            raise ValueError(f"history length {history_ids.shape[1]} > data.history_len={self.history_len}")
        if history_ids.shape[1] == 0:
            # the program's H starts at 1: one masked slot is the same empty history
            history_ids = torch.zeros(batch, 1, dtype=torch.int64)
            history_mask = torch.zeros(batch, 1, dtype=torch.bool)
        if batch == 0:
            return torch.empty(0, length)
        with torch.inference_mode():
            return self.program(item_ids, mask, scores, history_ids, history_mask)

    def score_table(self, table: pa.Table | pa.RecordBatch) -> torch.Tensor:
        """Logits [B, L] for request_logs rows (candidate_item_ids, retriever_scores,
        history_item_ids, labels), padded exactly as training collates them."""
        from dnr.data.collate import collate

        batch = collate(table, self.config.data, hash_ids=False)
        return self.score(batch.item_ids, batch.scores, batch.history_ids, batch.mask, batch.history_mask)


def _read(directory: str | Path, name: str) -> bytes:
    """The bytes of file ``name`` of an artifact directory: a local path or ``s3://bucket/key``
    (credentials and endpoint from the AWS environment, as for the lake)."""
    location = str(directory).rstrip("/")
    if not location.startswith(_S3_PREFIXES):
        return (Path(location) / name).read_bytes()
    from dnr.storage import Lake

    lake = Lake(location)
    try:
        with lake.filesystem().open_input_stream(lake.fs_path(f"{location}/{name}")) as stream:
            return stream.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{location}/{name}: no such object") from None


def read_manifest(directory: str | Path) -> dict:
    """The manifest of an artifact directory; ArtifactError if it is not one we can load."""
    try:
        manifest = json.loads(_read(directory, MANIFEST_FILE))
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{MANIFEST_FILE}: not JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{directory}: not a {FORMAT} artifact")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{directory}: format version {manifest.get('format_version')!r} unknown "
                            f"(this code reads version {FORMAT_VERSION})")
    if manifest.get("artifact", {}).get("file") != ARTIFACT_FILE:
        raise ArtifactError(f"{directory}: the manifest names {manifest.get('artifact', {}).get('file')!r}, "
                            f"expected {ARTIFACT_FILE}")
    return manifest


def load_artifact(directory: str | Path) -> ServingReranker:
    """A :class:`ServingReranker` from an artifact directory written by ``export_reranker``,
    a local path or an ``s3://`` prefix (read straight into memory, no local copy).

    Raises ArtifactError for an unknown format version, a sha256 that differs from the
    manifest's, or archive content we do not export (pickles, non-aten code).
    """
    manifest = read_manifest(directory)
    data = _read(directory, ARTIFACT_FILE)
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest["artifact"].get("sha256"):
        raise ArtifactError(f"{ARTIFACT_FILE}: sha256 {digest} differs from the manifest's "
                            f"{manifest['artifact'].get('sha256')}: the file was changed after export")
    check_archive(data)
    program = torch.export.load(io.BytesIO(data)).module()
    # torch checks every call's shapes against the export ranges through sympy, ~1-2 ms per call
    # on this model (as much as the whole forward at B=1); ServingReranker.score checks the same
    # ranges (B, 1 <= L <= max_list_len, H <= history_len, equal shapes) and casts the dtypes.
    program.validate_inputs = False
    return ServingReranker(program=program, manifest=manifest, config=config_from_dict(manifest["config"]))


def max_abs_difference(serving: ServingReranker, reranker: nn.Module, table: pa.Table) -> float:
    """Largest |artifact logit - eager logit| over request_logs rows ``table``: the eager model
    scores the training collate's hashed batch, the artifact the raw ids."""
    from dnr.data.collate import collate

    was_training = reranker.training
    reranker.eval()
    try:
        with torch.no_grad():
            eager = reranker(collate(table, serving.config.data))
    finally:
        reranker.train(was_training)
    return float((serving.score_table(table) - eager).abs().max())
