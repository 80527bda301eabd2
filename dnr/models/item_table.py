"""The hashed item-id table: one TorchRec ``EmbeddingCollection`` looked up per position.

A model holds one :class:`ItemTable` and looks up all of its id features (for PRM: the
candidate list and the history) in one call, so a sharded table costs one input and one output
exchange per forward, whatever the number of features. The table is a plain, unsharded TorchRec
module here; the training code shards it across the workers (``dnr.training.sharding``), and the
models never know.

Bucket 0 is padding. Padding positions are not sent to the table: only the real ids go in, as a
jagged tensor, and the output is scattered back to [B, N, d] with zeros at padding, which is what
``nn.Embedding(padding_idx=0)`` gave before (no row is read or trained for padding).

Rows start uniform in [-sqrt(3), sqrt(3)] (unit variance, the scale of ``nn.Embedding``'s
N(0, 1)) both unsharded (``init_fn``) and sharded (TorchRec's fused kernels draw
uniform(weight_init_min, weight_init_max)).

:class:`PlainItemTable` is the same lookup with a plain ``nn.Embedding`` for the serving export
(``torch.export`` of static shapes, no TorchRec in the served program); :func:`to_plain` makes a
copy of a model with it, sharing the weight.

Shapes: B requests, N positions of one feature, d embedding width.
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
from torch import nn
try:
    from torchrec import EmbeddingCollection, EmbeddingConfig, KeyedJaggedTensor
except ImportError as error:  # the one dependency pip cannot resolve for us (pyproject.toml says why)
    raise ImportError(
        f"TorchRec is missing or broken ({error}). Install the pair that matches torch 2.13.0 without "
        "its CUDA dependency: pip install -c constraints/cpu.txt --no-deps torchrec fbgemm-gpu-cpu (CPU), "
        "or the commands at the top of constraints/cuda.txt (GPU)") from error

TABLE = "item"
"""Name of the table in every model (plan, optimizer state and checkpoint keys use it)."""
INIT_BOUND = math.sqrt(3.0)
"""Rows start uniform in [-INIT_BOUND, INIT_BOUND]: unit variance."""

IdFeature = tuple[torch.Tensor, torch.Tensor]
"""(ids [B, N] int64 bucket ids, mask [B, N] bool: True at real positions)."""


def _uniform_init(weight: torch.Tensor) -> None:
    nn.init.uniform_(weight, -INIT_BOUND, INIT_BOUND)


class ItemTable(nn.Module):
    """``num_buckets`` x ``dim`` rows shared by the id features ``features`` (in call order)."""

    def __init__(self, num_buckets: int, dim: int, features: Sequence[str],
                 device: torch.device | str = "cpu"):
        super().__init__()
        self.features = tuple(features)
        self.dim = dim
        config = EmbeddingConfig(
            name=TABLE, embedding_dim=dim, num_embeddings=num_buckets, feature_names=list(self.features),
            weight_init_min=-INIT_BOUND, weight_init_max=INIT_BOUND, init_fn=_uniform_init,
        )
        # device="meta" allocates nothing: the sharding then materialises only the local rows
        self.collection = EmbeddingCollection(tables=[config], device=torch.device(device))

    @property
    def weight(self) -> torch.Tensor:
        """The whole table [num_buckets, d] (unsharded modules only)."""
        return self.collection.embeddings[TABLE].weight

    def forward(self, inputs: Sequence[IdFeature]) -> list[torch.Tensor]:
        """One (ids, mask) per feature, in ``features`` order -> one [B, N, d] per feature."""
        if len(inputs) != len(self.features):
            raise ValueError(f"expected {len(self.features)} id features {self.features}, got {len(inputs)}")
        lengths = torch.cat([mask.sum(dim=1) for _, mask in inputs])
        values = torch.cat([ids[mask] for ids, mask in inputs])
        looked_up = self.collection(KeyedJaggedTensor.from_lengths_sync(
            keys=list(self.features), values=values, lengths=lengths))
        return [_scatter(looked_up[name].values(), mask, self.dim)
                for name, (_, mask) in zip(self.features, inputs)]


class PlainItemTable(nn.Module):
    """The same lookup over a plain ``nn.Embedding`` (serving): static shapes, zero at padding."""

    def __init__(self, weight: torch.Tensor, features: Sequence[str]):
        super().__init__()
        self.features = tuple(features)
        self.embedding = nn.Embedding.from_pretrained(weight.detach(), freeze=True)

    def forward(self, inputs: Sequence[IdFeature]) -> list[torch.Tensor]:
        return [self.embedding(ids) * mask.unsqueeze(-1).to(self.embedding.weight.dtype)
                for ids, mask in inputs]


def to_plain(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose :class:`ItemTable` modules are :class:`PlainItemTable` modules
    sharing the same weights (the tables are not copied; ``model`` is left as it was)."""
    tables = [m for m in model.modules() if isinstance(m, ItemTable)]
    plain = copy.deepcopy(model, memo={id(t.collection): t.collection for t in tables})
    _swap_tables(plain)
    return plain


def _swap_tables(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, ItemTable):
            setattr(module, name, PlainItemTable(child.weight, child.features))
        else:
            _swap_tables(child)


def has_item_table(model: nn.Module) -> bool:
    """True if ``model`` holds an :class:`ItemTable` (the training code shards those models)."""
    return any(isinstance(m, ItemTable) for m in model.modules())


def _scatter(rows: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Real-position rows [n, d] (row-major over ``mask``) -> [B, N, d] with zeros at padding."""
    out = rows.new_zeros(*mask.shape, dim)
    return out.masked_scatter(mask.unsqueeze(-1), rows)
