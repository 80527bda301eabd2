"""Build a reranker from the config: the family is a registry entry, not a subclass."""

from __future__ import annotations

from typing import Callable

from torch import nn

from dnr.config import DataConfig, ModelConfig
from dnr.models.degre import DeGReGenerator
from dnr.models.prm import PRMReranker

RERANKERS: dict[str, Callable[..., nn.Module]] = {
    "prm": PRMReranker,
    "degre": DeGReGenerator,
}
"""Reranker families by ``model.family``; each maps a RerankBatch to ranking scores [B, L]
(higher = earlier, ``PAD_LOGIT`` at padding): PRM's click logits, or the DeGRe generator's
greedily decoded list (its K, a persisted buffer, comes from the checkpoint it loads). Each is
called as ``(model_cfg, data_cfg, table_device=...)``."""


def build_reranker(model_cfg: ModelConfig, data_cfg: DataConfig, table_device: str = "cpu") -> nn.Module:
    """A freshly initialised reranker of ``model_cfg.family`` with ``model_cfg.score_mode``
    (the served model: for degre the generator, never the training-only evaluator).
    ``table_device="meta"`` allocates no item table (the training code's sharding does)."""
    return RERANKERS[model_cfg.family](model_cfg, data_cfg, table_device=table_device)
