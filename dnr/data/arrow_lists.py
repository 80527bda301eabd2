"""Vectorised helpers over Arrow list columns (torch-free: Ray Data tasks import them cheaply)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def list_layout(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lengths [B], row of each flat value [N], position of each flat value in its list [N]).

    Null lists count as empty. Works on sliced arrays (values are taken through ``flatten``).
    """
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
    lengths = lengths.astype(np.int64, copy=False)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.cumsum(lengths) - lengths
    positions = np.arange(rows.size, dtype=np.int64) - starts[rows]
    return lengths, rows, positions


def flat_values(arr: pa.Array, fill) -> np.ndarray:
    """Flat list values as numpy; null elements (and null lists) replaced by ``fill``."""
    values = arr.flatten()
    if values.null_count:
        values = pc.fill_null(values, fill)
    return values.to_numpy(zero_copy_only=False)
