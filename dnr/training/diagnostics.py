"""What a person reads in TensorBoard to judge DNR's noise, computed at each log step.

* ``scores/real_quantile`` and ``scores/synthetic_quantile``: histograms of the real and the
  synthetic scores of the labelled candidates on the scale the model reads them (their quantile
  under the running real sketch). A generator on the retriever's own scale draws a synthetic
  histogram over the same range as the real one; ``scores/real`` and ``scores/synthetic`` are
  the raw scores.
* ``diag/auc_real`` and ``diag/auc_synthetic``: the AUC of the scores against the labels (how
  well the batch's scores alone rank its clicks). The synthetic one is how hard the denoising
  task is; an adversary that learns pushes it down, towards the real one. ``diag/auc_real_running``
  is the per-request AUC the score sketch keeps, and ``diag/lambda_c`` the noise ratio in use
  (``dnr.match_auc`` sets it from that AUC).
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
from dnr.training.step import TrainParts, noise_to_score, reranker_context, score_quantiles
from dnr.training.wrappers import unwrap


@dataclass
class Diagnosis:
    scalars: dict[str, float]
    histograms: dict[str, torch.Tensor]


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """AUC of 1-D scores against 0/1 labels (ties count one half); NaN without both classes."""
    scores, labels = scores.detach().float().flatten(), labels.detach().flatten() > 0
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    # average ranks (1-based) handle ties: the Mann-Whitney statistic
    sorted_scores, order = scores.sort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, scores.numel() + 1, dtype=torch.float32, device=scores.device)
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    first = counts.cumsum(0) - counts + 1
    mean_rank = first.float() + (counts.float() - 1) / 2
    ranks[order] = mean_rank[inverse]
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


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
    labelled, labels = batch.label_mask, batch.labels[batch.label_mask]
    real, fake = batch.scores[labelled], synthetic[labelled]
    scalars = {"diag/auc_real": auc(real, labels), "diag/auc_synthetic": auc(fake, labels),
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
