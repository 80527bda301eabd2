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

from typing import Optional

import torch

from dnr.config import (EMBEDDING_OPTIMIZERS, DataConfig, DeGReConfig, DNRConfig, JobConfig, ModelConfig, OptimConfig,
                        TrainConfig)
from dnr.data.batch import RerankBatch
from dnr.training.parts import TrainParts, _apply, reranker_context  # noqa: F401 - the step's parts, re-exported
from dnr.training.recipes import degre, prm
from dnr.training.recipes.recipe import Recipe as Family
from dnr.training.wrappers import unwrap  # noqa: F401 - re-exported for the step's callers

FAMILIES: dict[str, Family] = {"prm": prm.RECIPE, "degre": degre.RECIPE}
"""Training recipe per ``model.family`` (the keys of ``dnr.models.RERANKERS``)."""


def recipe(cfg: JobConfig) -> Family:
    """The recipe of ``cfg.model.family``."""
    return FAMILIES[cfg.model.family]


def _of_sections(model_cfg: ModelConfig, dnr_cfg: DNRConfig, optim_cfg: OptimConfig | None = None,
                 degre_cfg: DeGReConfig | None = None, data_cfg: DataConfig | None = None) -> JobConfig:
    """A whole config around the sections a caller of the section-wise entry points has; the
    train section only says where the tables' optimizer has a kernel (a recipe never reads it)."""
    optim_cfg = optim_cfg or OptimConfig()
    return JobConfig(data=data_cfg or DataConfig(), model=model_cfg, dnr=dnr_cfg, optim=optim_cfg,
                     degre=degre_cfg or DeGReConfig(),
                     train=TrainConfig(use_gpu=not EMBEDDING_OPTIMIZERS[optim_cfg.embedding_optimizer]))


def build_train_parts(
    model_cfg: ModelConfig, data_cfg: DataConfig, dnr_cfg: DNRConfig, optim_cfg: OptimConfig,
    degre_cfg: Optional[DeGReConfig] = None, table_device: str = "cpu",
) -> TrainParts:
    """Fresh unsharded models and their optimizers for ``model_cfg.family`` from config sections
    (``degre_cfg``: default DeGReConfig()); the loop calls the recipe with its whole config."""
    cfg = _of_sections(model_cfg, dnr_cfg, optim_cfg, degre_cfg, data_cfg)
    return recipe(cfg).build_parts(cfg, table_device)


def training_phase(model_cfg: ModelConfig, dnr_cfg: DNRConfig, global_step: int) -> str:
    """The phase the training progress records: heuristic / adversarial (prm) or distill (degre)."""
    cfg = _of_sections(model_cfg, dnr_cfg)
    return recipe(cfg).phase(cfg, global_step)


def train_step(
    batch: RerankBatch,
    parts: TrainParts,
    global_step: int,
    model_cfg: ModelConfig,
    dnr_cfg: DNRConfig,
    optim_cfg: OptimConfig,
    degre_cfg: Optional[DeGReConfig] = None,
) -> dict[str, float]:
    """One optimisation step on ``batch`` from config sections (tests, benchmarks): :func:`family_step`."""
    return family_step(batch, parts, global_step, _of_sections(model_cfg, dnr_cfg, optim_cfg, degre_cfg))


def family_step(batch: RerankBatch, parts: TrainParts, global_step: int, cfg: JobConfig) -> dict[str, float]:
    """One optimisation step of ``cfg``'s family on ``batch`` (already on the models' device);
    returns the loss terms.

    prm keys: ``train/loss_direct`` and ``train/loss_theta`` always; ``train/loss_z`` for DNR;
    ``train/loss_adv``, ``train/loss_x``, ``train/loss_phi`` after the switch. degre keys:
    ``train/loss_eval`` (= ``loss_cumulative`` + increment_weight * ``loss_increment``),
    ``train/loss_distill``, ``train/loss_theta`` (the generator's total) and,
    with dense supervision, ``train/loss_beam`` and ``train/mined_value`` (the best beam's
    predicted utility). Values are this worker's means (all-reducing them is the caller's business).
    """
    family = recipe(cfg)
    terms = family.step(batch, parts, global_step, cfg)
    if not terms.keys() <= set(family.loss_keys):  # the loop reduces and logs the declared keys only
        raise KeyError(f"the {cfg.model.family} step returned {sorted(terms.keys() - set(family.loss_keys))}, "
                       f"which Family.loss_keys does not declare: add them to FAMILIES[{cfg.model.family!r}]")
    # One device-to-host copy for all terms instead of one per .item().
    return dict(zip(terms, torch.stack([t.detach().float() for t in terms.values()]).tolist()))
