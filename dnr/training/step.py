"""One training step, pure PyTorch: the DNR adversarial step, plain BCE for baseline score modes,
or the DeGRe step. The family (``model.family``) picks its recipe from :data:`FAMILIES`.

:func:`train_step` is the only entry point the training loop calls. The models in
:class:`TrainParts` may be wrapped in DistributedDataParallel: the step only calls their
``forward`` and ``parameters()``, reaches inside a wrapper only through :func:`unwrap`, and each
half-step does exactly one backward through the model it updates, so DDP all-reduces the
gradients of that model and no other.

The models may also be TorchRec ``DistributedModelParallel`` wrappers (sharded item tables, see
:mod:`dnr.training.sharding`): their tables are then updated by a fused optimizer inside the
backward of the half-step that looks them up, and the generator half-step never looks up the
reranker's table (it scores with the reranker's detached context), so it cannot write into it.

Every prm step first folds the batch's real scores into the reranker's running sketch of the
score distribution (:mod:`dnr.models.score_quantiles`; all-reduced, so identical on all ranks):
the score modes that read the score as input read its quantile.

The DNR step (``dnr.enabled``, on any ``model.score_mode``), at global step t:

1. reranker half-step, generator frozen: one forward over the batch with two sets of scores
   (real, then synthetic; the lookups and user pooling run once, the encoder over 2B lists),
   L_theta = L_direct + lambda_m * L_z. The synthetic scores are the generator's quantiles
   mapped through the real scores' inverse CDF (``dnr.noise_scale``).
2. only once t >= lambda_e (and not in the heuristic-only ablation), generator half-step,
   reranker frozen: L_phi = L_adv + lambda_x * L_x. Before that the heuristic generator
   (gaussian or beta) makes the synthetic scores and only the reranker learns.

With lambda_m = 0 and no generator phase, the DNR step is the naive step of its score mode.

The DeGRe step (``model.family == 'degre'``, see :mod:`dnr.models.degre`):

1. evaluator update on the logged list: cumulative-utility regression of every prefix, plus the
   BCE of each increment on its click (weight ``degre.increment_weight``).
2. mining with the updated evaluator, no gradient: beam search, then the increments of every
   remaining candidate along the best beam, turned into per-step soft targets.
3. generator (the served ``reranker``) update: KL to the soft targets plus cross-entropy on the
   beam's choices, teacher-forced along the best beam. The ablation ``degre.dense=false`` skips
   the evaluator and mining and uses one-hot targets from the logged list, clicks first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch
from torch import nn

from dnr.config import DataConfig, DeGReConfig, DNRConfig, ModelConfig, OptimConfig
from dnr.data.batch import RerankBatch
from dnr.losses import LX_ESTIMATORS, adversarial_loss, cumulative_regression, masked_bce, soft_target_kl
from dnr.models import RerankerContext, build_generator, build_reranker, synthesize_scores
from dnr.models.degre import DeGReGenerator, LookaheadEvaluator, placed_before_each_step
from dnr.models.degre_search import (beam_search, clicks_first_order, one_hot_targets, prefix_utility,
                                     shuffled_logged_order, soft_targets, step_increments)
from dnr.training.optimizers import ModelOptimizer, plain_optimizer
from dnr.training.score_scale import (matched_lambda_c, noise_to_score, observe_real_scores, score_quantiles,
                                      set_noise_level)
from dnr.training.wrappers import evaluating, frozen, unwrap


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


def build_train_parts(
    model_cfg: ModelConfig, data_cfg: DataConfig, dnr_cfg: DNRConfig, optim_cfg: OptimConfig,
    degre_cfg: Optional[DeGReConfig] = None, table_device: str = "cpu",
) -> TrainParts:
    """Fresh unsharded models and their optimizers for ``model_cfg.family`` (``degre_cfg``:
    default DeGReConfig()). ``table_device="meta"`` allocates no item table: for the sharding
    to materialise only each worker's rows."""
    build = FAMILIES[model_cfg.family].build_parts
    return build(model_cfg, data_cfg, dnr_cfg, optim_cfg, degre_cfg or DeGReConfig(), table_device)


def _prm_parts(model_cfg: ModelConfig, data_cfg: DataConfig, dnr_cfg: DNRConfig, optim_cfg: OptimConfig,
               degre_cfg: DeGReConfig, table_device: str) -> TrainParts:
    """The PRM reranker; the DNR noise generators only with ``dnr.enabled``."""
    reranker = build_reranker(model_cfg, data_cfg, table_device)
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


def training_phase(model_cfg: ModelConfig, dnr_cfg: DNRConfig, global_step: int) -> str:
    """The phase the training progress records: heuristic / adversarial (prm) or distill (degre)."""
    return FAMILIES[model_cfg.family].phase(dnr_cfg, global_step)


def train_step(
    batch: RerankBatch,
    parts: TrainParts,
    global_step: int,
    model_cfg: ModelConfig,
    dnr_cfg: DNRConfig,
    optim_cfg: OptimConfig,
    degre_cfg: Optional[DeGReConfig] = None,
) -> dict[str, float]:
    """One optimisation step on ``batch`` (already on the models' device); returns the loss terms.

    prm keys: ``train/loss_direct`` and ``train/loss_theta`` always; ``train/loss_z`` for DNR;
    ``train/loss_adv``, ``train/loss_x``, ``train/loss_phi`` after the switch. degre keys:
    ``train/loss_eval`` (= ``loss_cumulative`` + increment_weight * ``loss_increment``),
    ``train/loss_distill``, ``train/loss_theta`` (the generator's total) and,
    with dense supervision, ``train/loss_beam`` and ``train/mined_value`` (the best beam's
    predicted utility). Values are this worker's means (all-reducing them is the caller's business).
    """
    family = FAMILIES[model_cfg.family]
    terms = family.step(batch, parts, global_step, model_cfg, dnr_cfg, optim_cfg, degre_cfg or DeGReConfig())
    if not terms.keys() <= set(family.loss_keys):  # the loop reduces and logs the declared keys only
        raise KeyError(f"the {model_cfg.family} step returned {sorted(terms.keys() - set(family.loss_keys))}, "
                       f"which Family.loss_keys does not declare: add them to FAMILIES[{model_cfg.family!r}]")
    # One device-to-host copy for all terms instead of one per .item().
    return dict(zip(terms, torch.stack([t.detach().float() for t in terms.values()]).tolist()))


def _prm_step(batch: RerankBatch, parts: TrainParts, global_step: int, model_cfg: ModelConfig,
              dnr_cfg: DNRConfig, optim_cfg: OptimConfig, degre_cfg: DeGReConfig) -> dict[str, torch.Tensor]:
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


# ---- DeGRe ----


def _degre_parts(model_cfg: ModelConfig, data_cfg: DataConfig, dnr_cfg: DNRConfig, optim_cfg: OptimConfig,
                 degre_cfg: DeGReConfig, table_device: str) -> TrainParts:
    """The generator (served: the ``reranker`` slot) and the lookahead evaluator (training only)."""
    generator = DeGReGenerator(model_cfg, data_cfg, decode_len=degre_cfg.list_len, table_device=table_device)
    evaluator = LookaheadEvaluator(model_cfg, degre_cfg, data_cfg, table_device=table_device)
    return TrainParts(
        reranker=generator, reranker_opt=plain_optimizer(generator, optim_cfg.lr, optim_cfg),
        evaluator=evaluator, evaluator_opt=plain_optimizer(evaluator, degre_cfg.evaluator_lr, optim_cfg),
    )


def _degre_step(batch: RerankBatch, parts: TrainParts, global_step: int, model_cfg: ModelConfig,
                dnr_cfg: DNRConfig, optim_cfg: OptimConfig, degre_cfg: DeGReConfig) -> dict[str, torch.Tensor]:
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


# ---- the families ----


@dataclass(frozen=True)
class Family:
    """How one ``model.family`` builds its parts, takes a step and names its phase."""

    build_parts: Callable[[ModelConfig, DataConfig, DNRConfig, OptimConfig, DeGReConfig, str], TrainParts]
    """(model_cfg, data_cfg, dnr_cfg, optim_cfg, degre_cfg, table_device) -> unsharded parts."""
    step: Callable[..., dict[str, torch.Tensor]]
    """(batch, parts, global_step, model_cfg, dnr_cfg, optim_cfg, degre_cfg) -> loss terms."""
    phase: Callable[[DNRConfig, int], str]
    """(dnr_cfg, global_step) -> the phase recorded in the training progress."""
    loss_keys: tuple[str, ...]
    """Every key ``step`` may return: what the loop all-reduces and logs (checked each step)."""


def _prm_phase(dnr_cfg: DNRConfig, global_step: int) -> str:
    return "adversarial" if generator_phase(dnr_cfg, global_step) else "heuristic"


def _degre_phase(dnr_cfg: DNRConfig, global_step: int) -> str:
    return "distill"


FAMILIES: dict[str, Family] = {
    "prm": Family(_prm_parts, _prm_step, _prm_phase, loss_keys=(
        "train/loss_direct", "train/loss_z", "train/loss_theta", "train/loss_adv", "train/loss_x",
        "train/loss_phi")),
    "degre": Family(_degre_parts, _degre_step, _degre_phase, loss_keys=(
        "train/loss_cumulative", "train/loss_increment", "train/loss_eval", "train/loss_distill",
        "train/loss_beam", "train/mined_value", "train/loss_theta")),
}
"""Training recipe per ``model.family`` (the keys of ``dnr.models.RERANKERS``)."""


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
