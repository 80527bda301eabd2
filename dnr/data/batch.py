"""``RerankBatch``: the typed contract between the data pipeline and the models.

Made by exactly one function, :func:`dnr.data.collate.collate`. Shapes use
B = requests in the batch, L = the batch's longest candidate list, H = history length.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

import numpy as np
import torch


@dataclass
class RerankBatch:
    """A padded batch of requests. Padding positions have ``mask == False``.

    Attributes:
        item_ids: [B, L] int64 hashed candidate buckets, retriever order; 0 = padding.
        scores: [B, L] float32 retriever scores in [0, 1]; 0 on padding.
        labels: [B, L] float32 0/1 feedback; 0 on padding.
        mask: [B, L] bool, True for real candidates.
        label_mask: [B, L] bool, True for candidates whose label counts (real and exposed).
        history_ids: [B, H] int64 hashed history buckets, most recent last; 0 = padding.
        history_mask: [B, H] bool, True for real history items.
        true_click_prob: [B, L] float32 oracle click probability (synthetic data only), or None.
    """

    item_ids: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor
    label_mask: torch.Tensor
    history_ids: torch.Tensor
    history_mask: torch.Tensor
    true_click_prob: Optional[torch.Tensor] = None

    @property
    def num_requests(self) -> int:
        return int(self.item_ids.shape[0])

    @property
    def list_len(self) -> int:
        return int(self.item_ids.shape[1])

    def _map(self, fn) -> "RerankBatch":
        return RerankBatch(
            **{f.name: (None if (v := getattr(self, f.name)) is None else fn(v)) for f in fields(self)}
        )

    def select(self, rows: torch.Tensor) -> "RerankBatch":
        """The requests at ``rows`` (an index tensor), in that order."""
        return self._map(lambda t: t[rows])

    def to(self, device, non_blocking: bool = False) -> "RerankBatch":
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "RerankBatch":
        return self._map(lambda t: t.pin_memory())

    def to_numpy(self) -> dict[str, np.ndarray]:
        """Plain dict of arrays (for Ray Data blocks); ``None`` fields are left out."""
        return {f.name: v.numpy() for f in fields(self) if (v := getattr(self, f.name)) is not None}

    @classmethod
    def from_numpy(cls, arrays: dict[str, np.ndarray]) -> "RerankBatch":
        names = {f.name for f in fields(cls)}
        return cls(**{k: torch.as_tensor(v) for k, v in arrays.items() if k in names})
