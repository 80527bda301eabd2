"""Serving export: the reranker alone (the generator is training-only) as a ``torch.export``
artifact that hashes raw item ids itself, with a manifest; safe loading and scoring.

    export_reranker(reranker, cfg, "out/")       # reranker.pt2 + manifest.json
    export_version(lake, "production")           # from the registry, to <lake>/serving/<version>/
    load_artifact("out/").score(item_ids, scores, history_ids, mask, history_mask)

Off to the side of the layers: the export runs in ``jobs/export_model.py``'s process (it reads
a checkpoint through :mod:`dnr.checkpoints` and the registry); the loader runs in a serving
process. Nothing else in ``dnr`` imports it.
"""

from dnr.serving.archive import ArtifactError, check_archive
from dnr.serving.artifact import ServingReranker, load_artifact, max_abs_difference, read_manifest
from dnr.serving.export import (
    ARTIFACT_FILE,
    FORMAT_VERSION,
    MANIFEST_FILE,
    export_program,
    export_reranker,
    export_version,
    load_version,
)
from dnr.serving.program import ServingProgram

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
