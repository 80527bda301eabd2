"""What a person reads in TensorBoard to judge DNR's noise, computed at each log step.

* ``scores/real_quantile`` and ``scores/synthetic_quantile``: histograms of the real and the
  synthetic scores of the labelled candidates on the scale the model reads them (their quantile
  under the running real sketch). A generator on the retriever's own scale draws a synthetic
  histogram over the same range as the real one; ``scores/real`` and ``scores/synthetic`` are
  the raw scores.
* ``diag/auc_real`` and ``diag/auc_synthetic``: the mean per-request AUC of the scores against
  the labels (how well each list's scores alone rank its clicks). The synthetic one is how hard the denoising
  task is; an adversary that learns pushes it down, towards the real one. ``diag/auc_real_running``
  is the per-request AUC the score sketch keeps with ``dnr.match_auc`` (which sets
  ``diag/lambda_c``, the noise ratio in use, from it; 0.5 untouched otherwise).
* ``diag/grad_norm_direct`` and ``diag/grad_norm_z``: the norms of the gradients of L_direct and
  of lambda_m * L_z with respect to the reranker's dense parameters, on the same batch: which
  objective drives the reranker. The item table is not differentiated (the reranker is scored
  with its detached context), so no fused table optimizer runs here.

Every rank calls :func:`dnr_diagnostics` (the context lookup is a collective on a sharded
table); only rank 0 writes. DNR only: without ``dnr.enabled`` it returns None.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dnr.config import DNRConfig
from dnr.data.batch import RerankBatch
from dnr.losses import masked_bce
from dnr.models import synthesize_scores
from dnr.models.score_quantiles import batch_auc_sums
from dnr.training.score_scale import noise_to_score, score_quantiles
from dnr.training.step import TrainParts, reranker_context
from dnr.training.wrappers import unwrap


@dataclass
class Diagnosis:
    scalars: dict[str, float]
    histograms: dict[str, torch.Tensor]


def per_request_auc(scores: torch.Tensor, batch: RerankBatch) -> float:
    """Mean per-request AUC of scores [B, L] against the batch's labels (the sketch's own
    measure, :func:`dnr.models.score_quantiles.batch_auc_sums`); NaN without a ranked request."""
    total, requests = batch_auc_sums(scores, batch.labels, batch.label_mask).tolist()
    return total / requests if requests else float("nan")


def dnr_diagnostics(parts: TrainParts, batch: RerankBatch, phase: str, dnr_cfg: DNRConfig) -> Diagnosis | None:
    """The histograms, AUCs and gradient norms of the module docstring for ``batch``."""
    if parts.heuristic is None:
        return None
    adversarial = phase == "adversarial" and parts.generator is not None
    noise = parts.generator if adversarial else parts.heuristic
    context = reranker_context(parts.reranker, batch)
    sketch = score_quantiles(parts.reranker)
    with torch.no_grad():
        synthetic = synthesize_scores(noise, batch, context if adversarial else None,
                                      noise_to_score(parts.reranker, dnr_cfg))
    real, fake = batch.scores[batch.label_mask], synthetic[batch.label_mask]
    scalars = {"diag/auc_real": per_request_auc(batch.scores, batch),
               "diag/auc_synthetic": per_request_auc(synthetic, batch),
               "diag/auc_real_running": float(sketch.auc), "diag/lambda_c": float(parts.heuristic.lambda_c)}
    scalars |= gradient_norms(unwrap(parts.reranker), batch, synthetic, context, dnr_cfg.lambda_m)
    histograms = {"scores/real": real, "scores/synthetic": fake,
                  "scores/real_quantile": sketch.cdf(real), "scores/synthetic_quantile": sketch.cdf(fake)}
    return Diagnosis(scalars, histograms)


def gradient_norms(reranker: nn.Module, batch: RerankBatch, synthetic: torch.Tensor, context,
                   lambda_m: float) -> dict[str, float]:
    """Norms of d L_direct / d theta and d (lambda_m L_z) / d theta over the dense parameters."""
    params = [p for p in reranker.parameters() if p.requires_grad and p.is_leaf]
    logits = reranker(batch, context=context, extra_scores=synthetic)
    real, fake = logits[:batch.num_requests], logits[batch.num_requests:]
    norms = {}
    for key, loss in (("diag/grad_norm_direct", masked_bce(real, batch.labels, batch.label_mask)),
                      ("diag/grad_norm_z", lambda_m * masked_bce(fake, batch.labels, batch.label_mask))):
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        present = [g.float().norm() for g in grads if g is not None]
        norms[key] = float(torch.linalg.vector_norm(torch.stack(present))) if present else 0.0
    return norms
