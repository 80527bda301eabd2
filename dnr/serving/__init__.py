"""Serving export: the reranker alone (the generator is training-only) as a ``torch.export``
artifact that hashes raw item ids itself, with a manifest; safe loading and scoring.

    export_reranker(reranker, cfg, "out/")       # reranker.pt2 + manifest.json
    export_version(lake, "production")           # from the registry, to <lake>/serving/<version>/
    load_artifact("out/").score(item_ids, scores, history_ids, mask, history_mask)

Off to the side of the layers: the export runs in ``jobs/export_model.py``'s process (it reads
a checkpoint through :mod:`dnr.checkpoints` and the registry); the loader runs in a serving
process. Nothing else in ``dnr`` imports it.

Two sides, two installs. The loader (:mod:`.artifact`, :mod:`.archive`) imports torch, numpy and
:mod:`dnr.config` only, so a serving process needs ``pip install dnr`` (``dnr[serving]``), not the
training stack. The export side (:mod:`.export`, :mod:`.program`: the models, the registry, the
lake) is imported on first use of one of its names (:data:`_EXPORT_SIDE`), never by
``from dnr.serving import load_artifact``; ``tests/unit/test_serving_imports.py`` keeps it so.
"""

from __future__ import annotations

import importlib

from dnr.serving.archive import ArtifactError, check_archive
from dnr.serving.artifact import ServingReranker, load_artifact, max_abs_difference, read_manifest
from dnr.serving.artifact_format import ARTIFACT_FILE, FORMAT_VERSION, MANIFEST_FILE

_EXPORT_SIDE = {
    "export_program": "dnr.serving.export",
    "export_reranker": "dnr.serving.export",
    "export_version": "dnr.serving.export",
    "load_version": "dnr.serving.export",
    "ServingProgram": "dnr.serving.program",
}
"""Names of the export side and their modules, imported when first asked for (PEP 562)."""

__all__ = [
    "ARTIFACT_FILE",
    "ArtifactError",
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "ServingProgram",
    "ServingReranker",
    "check_archive",
    "export_program",
    "export_reranker",
    "export_version",
    "load_artifact",
    "load_version",
    "max_abs_difference",
    "read_manifest",
]


def __getattr__(name: str):
    module = _EXPORT_SIDE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
