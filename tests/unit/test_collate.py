"""Collate: Arrow rows -> RerankBatch, padded, hashed, masked; no per-row loop."""

import time

import numpy as np
import pyarrow as pa
import torch

from dnr.config import DataConfig
from dnr.data.collate import collate
from dnr.data.hashing import bucketize
from dnr.schemas import REQUEST_LOGS
from tests.factories import make_rows, to_table

C = REQUEST_LOGS.col
CFG = DataConfig(num_buckets=1000, history_len=4)


def _rows():
    rows = make_rows(3, list_len=4, history_len=6)
    for c in (C.candidate_item_ids, C.retriever_scores, C.labels):
        rows[1][c] = rows[1][c][:2]  # a shorter list
    rows[2][C.history_item_ids] = []  # empty history
    return rows


def test_shapes_padding_and_masks():
    rows = _rows()
    batch = collate(to_table(rows, REQUEST_LOGS.arrow), CFG)
    assert batch.item_ids.shape == (3, 4) and batch.history_ids.shape == (3, 4)
    assert batch.mask.tolist()[1] == [True, True, False, False]
    assert torch.equal(batch.label_mask, batch.mask)  # exposed null: all labelled
    assert (batch.item_ids[~batch.mask] == 0).all() and (batch.item_ids[batch.mask] > 0).all()
    assert batch.scores[1, :2].tolist() == rows[1][C.retriever_scores]
    assert batch.labels[0].tolist() == [float(x) for x in rows[0][C.labels]]
    assert batch.scores.dtype == torch.float32 and batch.item_ids.dtype == torch.int64
    assert batch.true_click_prob is None


def test_item_ids_are_hashed_with_the_configured_buckets():
    rows = _rows()
    batch = collate(to_table(rows, REQUEST_LOGS.arrow), CFG)
    expected = bucketize(np.array(rows[0][C.candidate_item_ids]), CFG.num_buckets, CFG.hash_seed)
    assert batch.item_ids[0].tolist() == expected.tolist()
    assert batch.item_ids.max() < CFG.num_buckets


def test_history_keeps_the_most_recent_items():
    rows = _rows()
    batch = collate(to_table(rows, REQUEST_LOGS.arrow), CFG)
    recent = bucketize(np.array(rows[0][C.history_item_ids][-4:]), CFG.num_buckets, CFG.hash_seed)
    assert batch.history_ids[0].tolist() == recent.tolist()
    assert batch.history_mask[2].tolist() == [False] * 4


def test_exposed_restricts_the_label_mask_and_oracle_is_padded_with_nan():
    rows = _rows()
    rows[0][C.exposed] = [True, True, False, False]
    rows[0][C.true_click_prob] = [0.5, 0.4, 0.3, 0.2]
    batch = collate(to_table(rows, REQUEST_LOGS.arrow), CFG)
    assert batch.label_mask[0].tolist() == [True, True, False, False]
    assert batch.label_mask[1].tolist() == [True, True, False, False]  # exposed null, length 2
    assert torch.allclose(batch.true_click_prob[0], torch.tensor([0.5, 0.4, 0.3, 0.2]))
    assert torch.isnan(batch.true_click_prob[1]).all()


def test_sliced_and_chunked_input_collates_like_contiguous():
    table = to_table(make_rows(10, list_len=5), REQUEST_LOGS.arrow)
    chunked = pa.concat_tables([table.slice(0, 4), table.slice(4)])
    a, b = collate(table.slice(3, 5), CFG), collate(chunked.slice(3, 5), CFG)
    for name, value in a.to_numpy().items():
        np.testing.assert_array_equal(value, b.to_numpy()[name])


def test_numpy_round_trip_and_device_move():
    batch = collate(to_table(_rows(), REQUEST_LOGS.arrow), CFG)
    again = type(batch).from_numpy(batch.to_numpy())
    assert torch.equal(again.item_ids, batch.item_ids) and again.true_click_prob is None
    assert batch.to("cpu").num_requests == 3 and batch.list_len == 4


def test_collate_is_vectorised():
    table = pa.concat_tables([to_table(make_rows(256, list_len=50), REQUEST_LOGS.arrow)] * 16)
    start = time.perf_counter()
    batch = collate(table, DataConfig())
    elapsed = time.perf_counter() - start
    assert batch.item_ids.shape == (4096, 50)
    assert elapsed < 1.5, f"collate of 4096 requests took {elapsed:.2f}s"
