"""What the serving artifact computes: raw item ids in, one logit per candidate out.

The program is the trained reranker behind the same hashing as training, so that a serving
system passes the ids it has and can never skew from :mod:`dnr.data.collate`. Shapes: B requests,
L candidates (1..``data.max_list_len``), H history slots (1..``data.history_len``).
"""

from __future__ import annotations

import torch
from torch import nn

from dnr.config import DataConfig
from dnr.data.batch import RerankBatch
from dnr.serving import hashing
from dnr.serving.artifact_format import INPUT_NAMES, INPUTS, OUTPUT  # noqa: F401 (re-exported)


class _SymbolicBatch(RerankBatch):
    """A ``RerankBatch`` whose ``list_len`` stays a symbolic size under ``torch.export``.

    ``RerankBatch.list_len`` is ``int(shape[1])``: in eager mode a no-op, under export it pins L
    to the example's length. Returning ``shape[1]`` itself keeps L dynamic; values are identical.
    """

    @property
    def list_len(self):
        return self.item_ids.shape[1]


class ServingProgram(nn.Module):
    """Hashing + reranker: ``forward(*inputs)`` -> logits [B, L] (see :data:`INPUTS`).

    Buckets are :func:`dnr.serving.hashing.bucketize` of the raw ids (bit-exact with the numpy
    hash that training used), 0 where the mask is False, as :func:`dnr.data.collate.collate`
    pads.
    """

    def __init__(self, reranker: nn.Module, data_cfg: DataConfig):
        super().__init__()
        self.reranker = reranker
        self.num_buckets = data_cfg.num_buckets
        self.hash_seed = data_cfg.hash_seed

    def _buckets(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return hashing.bucketize(ids, self.num_buckets, self.hash_seed).masked_fill(~mask, 0)

    def forward(self, item_ids: torch.Tensor, mask: torch.Tensor, scores: torch.Tensor,
                history_ids: torch.Tensor, history_mask: torch.Tensor) -> torch.Tensor:
        # Labels are training-only; the reranker's forward never reads them.
        unused = torch.zeros_like(scores)
        batch = _SymbolicBatch(
            item_ids=self._buckets(item_ids, mask), scores=scores, labels=unused, mask=mask,
            label_mask=mask, history_ids=self._buckets(history_ids, history_mask),
            history_mask=history_mask,
        )
        return self.reranker(batch)
