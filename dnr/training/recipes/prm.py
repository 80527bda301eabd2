"""The PRM family's recipe (``model.family: prm``): the reranker, DNR's noise generators when
``dnr.enabled``, and the step of :mod:`dnr.training.step`'s docstring (the naive step of the
score mode, or the DNR step: reranker half-step, then the generator half-step after the switch).
Built and stepped from the whole :class:`~dnr.config.JobConfig`, each function reading the
sections it needs."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Optional

import torch
from torch import nn

from dnr.config import DNRConfig, JobConfig, OptimConfig
from dnr.data.batch import RerankBatch
from dnr.losses import LX_ESTIMATORS, adversarial_loss, masked_bce
from dnr.models import RerankerContext, build_generator, build_reranker, synthesize_scores
from dnr.training.optimizers import plain_optimizer
from dnr.training.parts import TrainParts, _apply, reranker_context
from dnr.training.recipes.recipe import Recipe
from dnr.training.score_scale import (matched_lambda_c, noise_to_score, observe_real_scores, score_quantiles,
                                      set_noise_level)
from dnr.training.wrappers import frozen, unwrap


def build_parts(cfg: JobConfig, table_device: str = "cpu") -> TrainParts:
    """The PRM reranker; the DNR noise generators only with ``dnr.enabled``."""
    model_cfg, dnr_cfg, optim_cfg = cfg.model, cfg.dnr, cfg.optim
    reranker = build_reranker(model_cfg, cfg.data, table_device)
    reranker_opt = plain_optimizer(reranker, optim_cfg.lr, optim_cfg)
    if not dnr_cfg.enabled:
        return TrainParts(reranker, reranker_opt)
    parts = TrainParts(
        reranker=reranker,
        reranker_opt=reranker_opt,
        heuristic=build_generator(dnr_cfg.heuristic, dnr_cfg, model_cfg.d_model),
    )
    if dnr_cfg.use_generator:
        parts.generator = build_generator(dnr_cfg.generator, dnr_cfg, model_cfg.d_model)
        parts.generator_opt = plain_optimizer(parts.generator, optim_cfg.generator_lr, optim_cfg)
    return parts


def generator_phase(dnr_cfg: DNRConfig, global_step: int) -> bool:
    """True once the model-based generator is on (the switch is a function of the lifetime step)."""
    if not (dnr_cfg.enabled and dnr_cfg.use_generator):
        return False
    if dnr_cfg.lambda_e < 0:
        raise ValueError("dnr.lambda_e is unresolved (-1): the run sets it from dnr.lambda_e_epochs "
                         "(DNRConfig.switch_step) before its first step")
    return global_step >= dnr_cfg.lambda_e


def phase(cfg: JobConfig, global_step: int) -> str:
    """heuristic (only the reranker learns) or adversarial (the learned generator is on)."""
    return "adversarial" if generator_phase(cfg.dnr, global_step) else "heuristic"


def step(batch: RerankBatch, parts: TrainParts, global_step: int, cfg: JobConfig) -> dict[str, torch.Tensor]:
    """One step: the real scores folded into the reranker's sketch, then the naive update or
    DNR's half-steps."""
    dnr_cfg, optim_cfg = cfg.dnr, cfg.optim
    match_auc = dnr_cfg.enabled and dnr_cfg.match_auc
    observe_real_scores(score_quantiles(parts.reranker), batch, dnr_cfg.hist_decay, with_auc=match_auc)
    if not dnr_cfg.enabled:
        return supervised_update(batch, parts, optim_cfg)
    if match_auc:
        set_noise_level(parts.heuristic, parts.generator,
                        matched_lambda_c(parts.reranker, parts.heuristic, dnr_cfg.lambda_c))
    return _dnr_step(batch, parts, global_step, dnr_cfg, optim_cfg)


def _dnr_step(
    batch: RerankBatch, parts: TrainParts, global_step: int, dnr_cfg: DNRConfig, optim_cfg: OptimConfig
) -> dict[str, torch.Tensor]:
    rows = synthetic_rows(batch, dnr_cfg.synthetic_fraction)
    if not generator_phase(dnr_cfg, global_step):
        return reranker_update(batch, parts, parts.heuristic, None, dnr_cfg, optim_cfg, rows)
    if parts.generator is None:
        raise ValueError("dnr.use_generator is true but TrainParts.generator is None")
    context = reranker_context(parts.reranker, batch)
    terms = reranker_update(batch, parts, parts.generator, context, dnr_cfg, optim_cfg, rows)
    return terms | generator_update(batch, parts, context, dnr_cfg, optim_cfg, rows)


def synthetic_rows(batch: RerankBatch, fraction: float) -> Optional[torch.Tensor]:
    """The requests that get a synthetic copy this step: None for all (``fraction`` 1), else
    ceil(fraction * B) of them at random (torch's generator, seeded per worker by the loop)."""
    if fraction >= 1.0:
        return None
    count = max(1, math.ceil(fraction * batch.num_requests))
    return torch.randperm(batch.num_requests, device=batch.item_ids.device)[:count]


def _subset(batch: RerankBatch, context: Optional[RerankerContext],
            rows: Optional[torch.Tensor]) -> tuple[RerankBatch, Optional[RerankerContext]]:
    if rows is None:
        return batch, context
    return batch.select(rows), (None if context is None else RerankerContext(*(t[rows] for t in context)))


def supervised_update(
    batch: RerankBatch, parts: TrainParts, optim_cfg: OptimConfig
) -> dict[str, torch.Tensor]:
    """Baseline step: L_theta = L_direct = BCE on the real scores."""
    loss = masked_bce(parts.reranker(batch), batch.labels, batch.label_mask)
    _apply(loss, parts.reranker_opt, optim_cfg.grad_clip)
    return {"train/loss_direct": loss, "train/loss_theta": loss}


def reranker_update(
    batch: RerankBatch,
    parts: TrainParts,
    noise: nn.Module,
    context: Optional[RerankerContext],
    dnr_cfg: DNRConfig,
    optim_cfg: OptimConfig,
    rows: Optional[torch.Tensor] = None,
) -> dict[str, torch.Tensor]:
    """Reranker half-step with the noise source frozen: L_theta = L_direct + lambda_m * L_z
    (L_z over the requests at ``rows``, all of them by default). With lambda_m = 0 the copy
    is not scored: the step is the naive one."""
    if dnr_cfg.lambda_m == 0.0:
        return supervised_update(batch, parts, optim_cfg)
    copy, copy_context = _subset(batch, context, rows)
    with torch.no_grad():
        synthetic = synthesize_scores(noise, copy, copy_context, noise_to_score(parts.reranker, dnr_cfg))
    # one lookup and user pooling for both copies; the encoder sees B + K lists
    logits = parts.reranker(batch, extra_scores=synthetic, extra_rows=rows)  # real, then synthetic
    real_logits, synthetic_logits = logits[:batch.num_requests], logits[batch.num_requests:]
    loss_direct = masked_bce(real_logits, batch.labels, batch.label_mask)
    loss_z = masked_bce(synthetic_logits, copy.labels, copy.label_mask)
    loss = loss_direct + dnr_cfg.lambda_m * loss_z
    _apply(loss, parts.reranker_opt, optim_cfg.grad_clip)
    return {"train/loss_direct": loss_direct, "train/loss_z": loss_z, "train/loss_theta": loss}


def generator_update(
    batch: RerankBatch,
    parts: TrainParts,
    context: RerankerContext,
    dnr_cfg: DNRConfig,
    optim_cfg: OptimConfig,
    rows: Optional[torch.Tensor] = None,
) -> dict[str, torch.Tensor]:
    """Generator half-step with the reranker frozen: L_phi = L_adv + lambda_x * L_x, over the
    requests at ``rows`` (all of them by default).

    The reranker's parameters have ``requires_grad`` off for the duration, so the backward
    reaches x' (and phi) through the reranker without writing any gradient into theta.
    ``context``, the generator's conditioning, is the one computed before the reranker
    half-step: it is detached either way, and recomputing it would cost a second embedding pass
    for a one-update difference. The reranker scores x' with its updated item embeddings and
    user vector, looked up without gradient (as the frozen forward would): no table lookup runs
    under autograd here, so a fused table optimizer has nothing to apply. The frozen reranker
    needs no gradient all-reduce, so it is called unwrapped.
    Ablated terms get weight 0 but are still reported.
    """
    batch, context = _subset(batch, context, rows)
    updated = reranker_context(parts.reranker, batch)
    quantiles = score_quantiles(parts.reranker)
    with frozen(parts.reranker):
        synthetic = synthesize_scores(parts.generator, batch, context, noise_to_score(parts.reranker, dnr_cfg))
        logits = unwrap(parts.reranker)(replace(batch, scores=synthetic), context=updated, rank_by_scores=True)
        loss_adv = adversarial_loss(logits, batch.labels, batch.label_mask)
        loss_x = LX_ESTIMATORS[dnr_cfg.lx_estimator](quantiles.cdf(synthetic), batch.label_mask, dnr_cfg.hist_bins)
        loss = float(dnr_cfg.use_adv) * loss_adv + float(dnr_cfg.use_lx) * dnr_cfg.lambda_x * loss_x
        _apply(loss, parts.generator_opt, optim_cfg.grad_clip)
    return {"train/loss_adv": loss_adv, "train/loss_x": loss_x, "train/loss_phi": loss}


RECIPE = Recipe(build_parts, step, phase, loss_keys=(
    "train/loss_direct", "train/loss_z", "train/loss_theta", "train/loss_adv", "train/loss_x", "train/loss_phi"))
