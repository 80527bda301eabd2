"""The optimizers of one model: AdamW over its dense parameters, and its item table's own.

An item table (``dnr.models.item_table``) is updated by ``optim.embedding_optimizer``:

* **unsharded** (unit tests, the quality bench): a plain torch optimizer over the table's
  weight, stepped with the dense one;
* **sharded** (training, ``dnr.training.sharding``): TorchRec's fused kernel, which applies the
  update inside the backward pass to the rows the batch touched; its ``step()`` does nothing.

Both compute the same update (same algorithm, learning rate and epsilon), so a model trained in
the benchmark and in the daily job follow the same recipe. Gradient clipping applies to the
dense parameters only: the fused kernel never materialises the table's gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import torch
from torch import nn
from torchrec.optim import RowWiseAdagrad

from dnr.config import OptimConfig
from dnr.models.item_table import ItemTable

EMBEDDING_EPS = 1e-8
"""Epsilon of the Adagrad/Adam denominators (TorchRec's fused default), in both paths."""


@dataclass(frozen=True)
class EmbeddingOptimizer:
    """One ``optim.embedding_optimizer`` entry: its fused TorchRec kernel and its plain twin."""

    fused: str
    """Name of the ``fbgemm_gpu`` ``EmbOptimType`` member (looked up when sharding)."""
    plain: Callable[[Iterable[nn.Parameter], float], torch.optim.Optimizer]
    """(params, lr) -> the same optimizer for an unsharded table."""


EMBEDDING_OPTIMIZERS: dict[str, EmbeddingOptimizer] = {
    "rowwise_adagrad": EmbeddingOptimizer(
        "EXACT_ROWWISE_ADAGRAD", lambda params, lr: RowWiseAdagrad(params, lr=lr, eps=EMBEDDING_EPS)),
    "adagrad": EmbeddingOptimizer(
        "EXACT_ADAGRAD", lambda params, lr: torch.optim.Adagrad(params, lr=lr, eps=EMBEDDING_EPS)),
    "sgd": EmbeddingOptimizer("EXACT_SGD", lambda params, lr: torch.optim.SGD(params, lr=lr)),
    "adam": EmbeddingOptimizer("ADAM", lambda params, lr: torch.optim.Adam(params, lr=lr, eps=EMBEDDING_EPS)),
}
"""Keys: the names ``dnr.config.EMBEDDING_OPTIMIZERS`` validates (a unit test keeps them equal)."""


@dataclass
class ModelOptimizer:
    """What a half-step calls: ``zero_grad()``, ``step()``; ``dense`` is the AdamW over the
    dense parameters (its ``param_groups`` carry the learning rate that is logged)."""

    dense: torch.optim.Optimizer
    dense_params: list[nn.Parameter]
    """The parameters ``dense`` updates (the ones gradient clipping sees)."""
    embedding: Optional[torch.optim.Optimizer] = None
    """The item table's optimizer: plain torch, or TorchRec's fused one (a ``KeyedOptimizer``)."""
    fused: bool = False
    """True when ``embedding`` runs inside the backward (sharded tables)."""
    base_lrs: list[float] = field(default_factory=list)
    """The learning rate of every param group (dense, then embedding) as built: what
    :meth:`scale_lr` multiplies."""

    def __post_init__(self):
        self.base_lrs = [group["lr"] for group in self._groups()]

    def _groups(self) -> list[dict]:
        return [g for opt in (self.dense, self.embedding) if opt is not None for g in opt.param_groups]

    def scale_lr(self, factor: float) -> None:
        """Every group's learning rate = its built one x ``factor`` (the schedule's)."""
        for group, base in zip(self._groups(), self.base_lrs):
            group["lr"] = base * factor
        if self.fused and self.embedding is not None:
            self.embedding.step()  # a fused optimizer's step() only hands the rate to its kernel

    @property
    def param_groups(self) -> list[dict]:
        return self.dense.param_groups

    def zero_grad(self) -> None:
        self.dense.zero_grad(set_to_none=True)
        if self.embedding is not None and not self.fused:
            self.embedding.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.dense.step()
        if self.embedding is not None and not self.fused:
            self.embedding.step()


def plain_optimizer(model: nn.Module, lr: float, optim_cfg: OptimConfig) -> ModelOptimizer:
    """AdamW(lr) over the dense parameters of an unsharded ``model``, and the configured
    embedding optimizer over its item tables."""
    tables = [p for m in model.modules() if isinstance(m, ItemTable) for p in m.parameters()]
    table_ids = {id(p) for p in tables}
    dense = [p for p in model.parameters() if id(p) not in table_ids]
    embedding = (EMBEDDING_OPTIMIZERS[optim_cfg.embedding_optimizer].plain(tables, optim_cfg.embedding_lr)
                 if tables else None)
    return ModelOptimizer(adamw(dense, lr, optim_cfg.weight_decay), dense, embedding)


def adamw(params: list[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
