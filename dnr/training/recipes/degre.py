"""The DeGRe family's recipe (``model.family: degre``, :mod:`dnr.models.degre`): the list
generator (served, in the ``reranker`` slot) and the lookahead evaluator (training only), and
the step: evaluator update, mining, distillation (:mod:`dnr.training.step`'s docstring). Built
and stepped from the whole :class:`~dnr.config.JobConfig`."""

from __future__ import annotations

import torch
from torch import nn

from dnr.config import DeGReConfig, JobConfig, OptimConfig
from dnr.data.batch import RerankBatch
from dnr.losses import cumulative_regression, masked_bce, soft_target_kl
from dnr.models.degre import DeGReGenerator, LookaheadEvaluator, placed_before_each_step
from dnr.models.degre_search import (beam_search, clicks_first_order, one_hot_targets, prefix_utility,
                                     shuffled_logged_order, soft_targets, step_increments)
from dnr.training.optimizers import plain_optimizer
from dnr.training.parts import TrainParts, _apply
from dnr.training.recipes.recipe import Recipe
from dnr.training.wrappers import evaluating, unwrap


def build_parts(cfg: JobConfig, table_device: str = "cpu") -> TrainParts:
    """The generator (served: the ``reranker`` slot) and the lookahead evaluator (training only)."""
    model_cfg, data_cfg, optim_cfg, degre_cfg = cfg.model, cfg.data, cfg.optim, cfg.degre
    generator = DeGReGenerator(model_cfg, data_cfg, decode_len=degre_cfg.list_len, table_device=table_device)
    evaluator = LookaheadEvaluator(model_cfg, degre_cfg, data_cfg, table_device=table_device)
    return TrainParts(
        reranker=generator, reranker_opt=plain_optimizer(generator, optim_cfg.lr, optim_cfg),
        evaluator=evaluator, evaluator_opt=plain_optimizer(evaluator, degre_cfg.evaluator_lr, optim_cfg),
    )


def phase(cfg: JobConfig, global_step: int) -> str:
    return "distill"


def step(batch: RerankBatch, parts: TrainParts, global_step: int, cfg: JobConfig) -> dict[str, torch.Tensor]:
    """Evaluator update (with dense supervision), then the generator's distillation."""
    degre_cfg, optim_cfg = cfg.degre, cfg.optim
    if parts.evaluator is None:
        raise ValueError("model.family is degre but TrainParts.evaluator is None")
    # the ablation without dense supervision never asks the evaluator: it is not trained then
    # (it stays in the checkpoint, untrained, so that the parts are the same in both settings)
    terms = evaluator_update(batch, parts, degre_cfg, optim_cfg) if degre_cfg.dense else {}
    return terms | distill_update(batch, parts, degre_cfg, optim_cfg)


def evaluator_update(batch: RerankBatch, parts: TrainParts, degre_cfg: DeGReConfig,
                     optim_cfg: OptimConfig) -> dict[str, torch.Tensor]:
    """Cumulative-utility regression of every prefix of the logged list (labelled, retriever
    order) + increment_weight * BCE of each increment on its click."""
    order = shuffled_logged_order(batch)
    logits = parts.evaluator(batch, order.index, order.valid)  # [B, L]
    loss_cumulative = cumulative_regression(torch.sigmoid(logits), prefix_utility(batch, order), order.valid)
    loss_increment = masked_bce(logits, batch.labels.gather(1, order.index.clamp_min(0)), order.valid)
    loss = loss_cumulative + degre_cfg.increment_weight * loss_increment
    _apply(loss, parts.evaluator_opt, optim_cfg.grad_clip)
    return {"train/loss_cumulative": loss_cumulative, "train/loss_increment": loss_increment,
            "train/loss_eval": loss}


def mine(batch: RerankBatch, evaluator: nn.Module, degre_cfg: DeGReConfig) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor]:
    """Offline lookahead mining, no gradient: (best beam [B, K], soft targets [B, K, L] along it,
    its predicted utility V_K [B]). The evaluator runs in eval mode: no dropout in the search."""
    model = unwrap(evaluator)
    with evaluating(model):
        beams = beam_search(model, batch, degre_cfg.beam_width, degre_cfg.list_len)
        best = beams.sequences[:, 0]
        gain, open_ = step_increments(model, batch, best)
    return best, soft_targets(gain, open_, degre_cfg.temperature), beams.values[:, 0]


def distill_update(batch: RerankBatch, parts: TrainParts, degre_cfg: DeGReConfig,
                   optim_cfg: OptimConfig) -> dict[str, torch.Tensor]:
    """Generator update, teacher-forced along the mined sequence (the logged one in the ablation):
    KL to the soft targets + beam_weight * CE on the beam's choices, or CE on the logged list."""
    length, steps = batch.list_len, degre_cfg.list_len
    terms: dict[str, torch.Tensor] = {}
    if degre_cfg.dense:
        teacher, targets, value = mine(batch, parts.evaluator, degre_cfg)
        has_list = batch.mask.any(dim=1)
        terms["train/mined_value"] = torch.where(has_list, value, 0.0).sum() / has_list.sum().clamp_min(1)
    else:
        logged = clicks_first_order(batch).index
        teacher = torch.nn.functional.pad(logged, (0, max(0, steps - length)), value=-1)[:, :steps]
        targets = one_hot_targets(teacher, length)
    logits = parts.reranker(batch, teacher)  # [B, K, L]
    allowed = batch.mask.unsqueeze(1) & ~placed_before_each_step(teacher, length)
    loss_distill = soft_target_kl(logits, targets, allowed)
    loss = loss_distill
    if degre_cfg.dense:
        terms["train/loss_beam"] = soft_target_kl(logits, one_hot_targets(teacher, length), allowed)
        loss = loss + degre_cfg.beam_weight * terms["train/loss_beam"]
    _apply(loss, parts.reranker_opt, optim_cfg.grad_clip)
    return terms | {"train/loss_distill": loss_distill, "train/loss_theta": loss}


RECIPE = Recipe(build_parts, step, phase, loss_keys=(
    "train/loss_cumulative", "train/loss_increment", "train/loss_eval", "train/loss_distill", "train/loss_beam",
    "train/mined_value", "train/loss_theta"))
