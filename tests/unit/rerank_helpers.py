"""Tiny hand-made ``RerankBatch``es and configs for the model, loss and step unit tests."""

from __future__ import annotations

import pytest
import torch

from dnr.config import DataConfig, ModelConfig
from dnr.data.batch import RerankBatch

NUM_BUCKETS = 64
TINY_DATA = DataConfig(max_list_len=16, history_len=8, num_buckets=NUM_BUCKETS)
"""Small enough that a training step takes milliseconds."""


def tiny_model(score_mode: str = "denoise", dropout: float = 0.0) -> ModelConfig:
    return ModelConfig(score_mode=score_mode, d_model=16, n_layers=1, n_heads=2, ff_dim=32, dropout=dropout)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors on a shared 2-core machine: extra intra-op threads only add contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_batch(num_requests: int = 12, list_len: int = 8, history_len: int = 5, seed: int = 0) -> RerankBatch:
    """A learnable batch: buckets below 20 are clicked; scores are labels plus uniform noise.

    Request 0 has a shorter list (padding), request 1 no history, request 2 no labelled candidate,
    and every fourth candidate of request 3 is unlabelled (not exposed).
    """
    gen = torch.Generator().manual_seed(seed)
    items = torch.randint(1, NUM_BUCKETS, (num_requests, list_len), generator=gen)
    labels = (items < 20).float()
    scores = (0.4 * labels + 0.6 * torch.rand(num_requests, list_len, generator=gen)).clamp(0.0, 1.0)
    mask = torch.ones(num_requests, list_len, dtype=torch.bool)
    mask[0, list_len - 3:] = False
    label_mask = mask.clone()
    label_mask[2] = False
    label_mask[3, ::4] = False
    history = torch.randint(1, NUM_BUCKETS, (num_requests, history_len), generator=gen)
    history_mask = torch.ones(num_requests, history_len, dtype=torch.bool)
    history_mask[1] = False
    history_mask[4, :2] = False
    return RerankBatch(
        item_ids=items.masked_fill(~mask, 0),
        scores=scores.masked_fill(~mask, 0.0),
        labels=labels.masked_fill(~label_mask, 0.0),
        mask=mask,
        label_mask=label_mask,
        history_ids=history.masked_fill(~history_mask, 0),
        history_mask=history_mask,
    )


def pad_batch(batch: RerankBatch, extra_candidates: int = 0, extra_history: int = 0) -> RerankBatch:
    """The same requests with more trailing padding candidates and history slots."""

    def pad(t: torch.Tensor, extra: int) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, extra), value=0)

    return RerankBatch(
        item_ids=pad(batch.item_ids, extra_candidates),
        scores=pad(batch.scores, extra_candidates),
        labels=pad(batch.labels, extra_candidates),
        mask=pad(batch.mask, extra_candidates),
        label_mask=pad(batch.label_mask, extra_candidates),
        history_ids=pad(batch.history_ids, extra_history),
        history_mask=pad(batch.history_mask, extra_history),
    )
