"""The one place where request-log rows become tensors: Arrow columns -> ``RerankBatch``.

Vectorised: list columns are handled through their flat values and offsets, scattered into
padded ``[B, L]`` arrays with one fancy-indexing assignment. No Python loop per row.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from dnr.config import DataConfig
from dnr.data.arrow_lists import flat_values, list_layout
from dnr.data.batch import RerankBatch
from dnr.data.hashing import bucketize
from dnr.schemas import REQUEST_LOGS

C = REQUEST_LOGS.col


def _column(table: pa.Table, name: str) -> pa.Array:
    col = table.column(name)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _ids(arr: pa.Array, cfg: DataConfig, hash_ids: bool) -> np.ndarray:
    """Flat item ids of a list column (nulls as id 0), hashed into buckets unless ``hash_ids`` is False."""
    ids = flat_values(arr, 0)
    return bucketize(ids, cfg.num_buckets, cfg.hash_seed) if hash_ids else ids.astype(np.int64, copy=False)


def pad_lists(arr: pa.Array, width: int, fill, dtype, keep: str = "head",
              values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pad a list column to ``[B, width]``; returns (values, mask).

    ``keep="head"`` keeps the first ``width`` elements, ``"tail"`` the last (used for the
    history, which is oldest first: the most recent items matter most).
    """
    lengths, rows, pos = list_layout(arr)
    if values is None:
        values = flat_values(arr, fill)
    if keep == "tail":
        # shift so that the last `width` elements land in positions 0..width-1
        pos = pos - np.maximum(lengths - width, 0)[rows]
    keep_mask = (pos >= 0) & (pos < width)
    out = np.full((len(lengths), width), fill, dtype=dtype)
    mask = np.zeros((len(lengths), width), dtype=bool)
    out[rows[keep_mask], pos[keep_mask]] = values[keep_mask]
    mask[rows[keep_mask], pos[keep_mask]] = True
    return out, mask


def collate(table: pa.Table | pa.RecordBatch, cfg: DataConfig, *, hash_ids: bool = True) -> RerankBatch:
    """Validated request-log rows -> ``RerankBatch`` padded to the batch's longest list.

    Expects rows that passed :mod:`dnr.data.validate` (equal list lengths, 1..max_list_len
    candidates). Item ids of candidates and history are hashed into ``cfg.num_buckets``
    buckets (0 = padding). Label mask: a candidate counts when it is real and, if the row
    has ``exposed``, was shown; a null ``exposed`` means every candidate was labelled.

    ``hash_ids=False`` leaves the raw int64 item ids in ``item_ids`` and ``history_ids`` (0 at
    padding): the exported serving program hashes them itself (:mod:`dnr.serving`).
    """
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    candidates = _column(table, C.candidate_item_ids)
    lengths, _, _ = list_layout(candidates)
    width = max(int(lengths.max(initial=0)), 1)

    item_ids, mask = pad_lists(candidates, width, 0, np.int64, values=_ids(candidates, cfg, hash_ids))
    scores, _ = pad_lists(_column(table, C.retriever_scores), width, 0.0, np.float32)
    labels, _ = pad_lists(_column(table, C.labels), width, 0, np.float32)

    label_mask = mask.copy()
    if C.exposed in table.column_names:
        exposed = _column(table, C.exposed)
        if exposed.null_count < len(exposed):
            shown, _ = pad_lists(exposed, width, False, bool)
            has_exposure = exposed.is_valid().to_numpy(zero_copy_only=False)
            label_mask &= np.where(has_exposure[:, None], shown, True)

    history = _column(table, C.history_item_ids)
    history_ids, history_mask = pad_lists(history, cfg.history_len, 0, np.int64, keep="tail",
                                          values=_ids(history, cfg, hash_ids))

    true_click_prob = None
    if C.true_click_prob in table.column_names:
        oracle = _column(table, C.true_click_prob)
        if oracle.null_count < len(oracle):
            true_click_prob = torch.from_numpy(pad_lists(oracle, width, np.nan, np.float32)[0])

    return RerankBatch(
        item_ids=torch.from_numpy(item_ids),
        scores=torch.from_numpy(scores),
        labels=torch.from_numpy(labels),
        mask=torch.from_numpy(mask),
        label_mask=torch.from_numpy(label_mask),
        history_ids=torch.from_numpy(history_ids),
        history_mask=torch.from_numpy(history_mask),
        true_click_prob=true_click_prob,
    )
