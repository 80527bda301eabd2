"""What a training step updates (:class:`TrainParts`) and the helpers every family's step shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from dnr.data.batch import RerankBatch
from dnr.models import RerankerContext
from dnr.training.optimizers import ModelOptimizer
from dnr.training.wrappers import unwrap


@dataclass
class TrainParts:
    """Everything a step updates. Built unsharded (:func:`build_train_parts`);
    ``dnr.training.sharding.distribute`` moves, shards and wraps the models and rebuilds the
    optimizers of the models it shards.

    ``reranker`` is the served model of every family: PRM's reranker, DeGRe's list generator.
    The field names are the checkpoint's part names (``reranker``, ``reranker_opt``, ...), so a
    rename would change the checkpoint format; ``generator`` is always DNR's noise generator."""

    reranker: nn.Module
    """q_theta; maps a RerankBatch to logits [B, L]."""
    reranker_opt: ModelOptimizer
    """Optimizers over theta (dense AdamW + the item table's)."""
    heuristic: Optional[nn.Module] = None
    """Stage-1 noise (gaussian or beta), parameter-free; None without ``dnr.enabled``."""
    generator: Optional[nn.Module] = None
    """Model-based generator f_phi; None without DNR and in the heuristic-only ablation."""
    generator_opt: Optional[ModelOptimizer] = None
    """Optimizer over phi (dense only: the generator has no item table)."""
    evaluator: Optional[nn.Module] = None
    """DeGRe lookahead evaluator (training only, never served); None for the prm family."""
    evaluator_opt: Optional[ModelOptimizer] = None
    """Optimizers over the evaluator (dense AdamW + its item table's)."""


def reranker_context(reranker: nn.Module, batch: RerankBatch) -> RerankerContext:
    """Detached item embeddings and user vector of the (possibly wrapped) reranker."""
    with torch.no_grad():
        return unwrap(reranker).context(batch)


def _apply(loss: torch.Tensor, opt: ModelOptimizer, grad_clip: float) -> None:
    opt.zero_grad()
    loss.backward()  # a sharded table's fused optimizer updates its rows here
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(opt.dense_params, grad_clip)
    opt.step()
