"""The step's side of the retriever's own score scale: the reranker's running sketch of the real
scores (:mod:`dnr.models.score_quantiles`), folded in every prm step and all-reduced, and what the
DNR step reads from it: the inverse CDF that turns generated quantiles into scores, and, with
``dnr.match_auc``, the noise ratio at which synthetic lists rank as well as the real ones.

Pure PyTorch; the models may be wrapped (DDP, TorchRec): they are reached through ``unwrap``.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.distributed as dist
from torch import nn

from dnr.config import DNRConfig
from dnr.data.batch import RerankBatch
from dnr.models.score_quantiles import ScoreQuantiles, batch_auc_sums
from dnr.training.wrappers import unwrap


def score_quantiles(reranker: nn.Module) -> ScoreQuantiles:
    """The (possibly wrapped) reranker's running sketch of the real scores."""
    return unwrap(reranker).score_quantiles


def noise_to_score(reranker: nn.Module, dnr_cfg: DNRConfig) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    """How generated quantiles become scores: the real inverse CDF, or None (u' is the score)."""
    return score_quantiles(reranker).icdf if dnr_cfg.noise_scale == "quantile" else None


def observe_real_scores(quantiles: ScoreQuantiles, batch: RerankBatch, decay: float, with_auc: bool = False) -> None:
    """Fold the batch's labelled real scores into the sketch and, ``with_auc`` (``dnr.match_auc``
    reads it), their per-request AUC: [B, L, L] comparisons a step need not pay otherwise."""
    counts = quantiles.batch_counts(batch.scores, batch.label_mask)
    sums = torch.cat([counts, batch_auc_sums(batch.scores, batch.labels, batch.label_mask)]) if with_auc else counts
    # Every worker folds in the same global sums, so the sketch stays identical across DDP ranks.
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(sums)
    if with_auc:
        quantiles.update(sums[:-2], decay, sums[-2:])
    else:
        quantiles.update(sums, decay)


def matched_lambda_c(reranker: nn.Module, heuristic: nn.Module, configured: float) -> torch.Tensor:
    """``dnr.match_auc``: the lambda_c at which the heuristic's synthetic scores rank the labels
    with the real scores' running AUC (``configured`` until a request with a positive and a
    negative has been seen)."""
    sketch = score_quantiles(reranker)
    matched = heuristic.lambda_c_for_auc(sketch.auc)
    return torch.where(sketch.auc_updates > 0, matched, torch.full_like(matched, configured))


def set_noise_level(heuristic: nn.Module, generator: Optional[nn.Module], lambda_c) -> None:
    """The noise ratio of the heuristic and of the learned generator (both anchored alike)."""
    heuristic.lambda_c = lambda_c
    if generator is not None:
        unwrap(generator).lambda_c = lambda_c
