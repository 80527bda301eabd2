"""What an artifact is, in names and shapes only: the file names, the format version, the
program's inputs and output. Shared by the export (:mod:`dnr.serving.export`) and the loader
(:mod:`dnr.serving.artifact`, :mod:`dnr.serving.archive`), and importing nothing, so that loading
an artifact never imports the export side (models, registry, the lake).
"""

from __future__ import annotations

FORMAT = "dnr-serving"
FORMAT_VERSION = 1
"""Bumped whenever the manifest or the program's inputs change meaning; loaders refuse others."""
ARTIFACT_FILE = "reranker.pt2"
MANIFEST_FILE = "manifest.json"
MAX_BATCH = 1 << 20
"""Upper bound of the dynamic batch dimension (export wants a finite range to reason about)."""

INPUT_NAMES = ("item_ids", "mask", "scores", "history_ids", "history_mask")
"""Positional inputs of the program, in order; their dtypes and shapes are in :data:`INPUTS`."""
INPUTS = {
    "item_ids": ("int64", ("B", "L"), "raw candidate item ids, retriever order; 0 at padding"),
    "mask": ("bool", ("B", "L"), "True for real candidates"),
    "scores": ("float32", ("B", "L"), "retriever scores in [0, 1]; 0 at padding"),
    "history_ids": ("int64", ("B", "H"), "raw history item ids, most recent last; 0 at padding"),
    "history_mask": ("bool", ("B", "H"), "True for real history items"),
}
OUTPUT = {"name": "logits", "dtype": "float32", "shape": ["B", "L"],
          "description": "one ranking score per candidate, higher ranks earlier (PRM: the click "
                         "logit); PAD_LOGIT where mask is False"}
