"""The one place where training is distributed: item tables sharded, dense parameters replicated.

:func:`distribute` takes the unsharded :class:`~dnr.training.step.TrainParts` and

* shards every model that holds an item table (the PRM reranker, the DeGRe generator and
  evaluator) with TorchRec's ``DistributedModelParallel``: a sharding planner places the
  table's rows (``train.embedding_sharding``: row-wise by default, each worker holding 1/N of
  the rows; ``auto``: the planner's choice among table-, row- and column-wise), the lookup of a
  batch exchanges ids and rows between the workers, and the configured
  ``optim.embedding_optimizer`` is fused into the backward, so a step updates only the rows its
  batch touched and no worker ever holds the whole table or its gradient;
* wraps the dense rest of those models, and the DNR noise generator, in DDP (data parallel), so
  every half-step all-reduces the gradients of the model it updates and the dense parameters
  stay identical on all ranks;
* rebuilds the sharded models' optimizers: AdamW over the dense parameters, with the learning
  rates the unsharded parts were built with, plus the fused table optimizer.

It needs an initialised process group (Ray Train's; one worker works too). Models are built with
``table_device="meta"`` so that no worker allocates a whole table first.
"""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.embedding_types import EmbeddingComputeKernel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.types import ShardingEnv, ShardingType
from torchrec.optim.optimizers import in_backward_optimizer_filter

from dnr.config import OptimConfig, TrainConfig
from dnr.models.item_table import TABLE, has_item_table
from dnr.training.optimizers import EMBEDDING_EPS, EMBEDDING_OPTIMIZERS, ModelOptimizer, adamw
from dnr.training.step import TrainParts

SHARDING_TYPES: dict[str, list[str]] = {
    "row_wise": [ShardingType.ROW_WISE.value],
    # not data_parallel: a replicated table would need a dense optimizer of its own
    "auto": [ShardingType.TABLE_WISE.value, ShardingType.ROW_WISE.value, ShardingType.COLUMN_WISE.value],
}
"""``train.embedding_sharding`` -> the sharding types the planner may choose from."""

# The planner logs hardware advice meant for TorchRec's internal deployments on every run.
logging.getLogger("torchrec.distributed.planner").setLevel(logging.ERROR)


def distribute(parts: TrainParts, device: torch.device, train_cfg: TrainConfig,
               optim_cfg: OptimConfig) -> TrainParts:
    """Shard, wrap and move every trained model of ``parts`` (in place); returns ``parts``."""
    for slot in ("reranker", "evaluator"):
        model, opt = getattr(parts, slot), getattr(parts, f"{slot}_opt")
        if model is None:
            continue
        if has_item_table(model):
            group = opt.dense.param_groups[0]
            sharded = shard(model, device, train_cfg.embedding_sharding, optim_cfg)
            setattr(parts, slot, sharded)
            setattr(parts, f"{slot}_opt", sharded_optimizer(sharded, group["lr"], group["weight_decay"]))
        else:
            setattr(parts, slot, data_parallel(model, device))
    if parts.generator is not None:
        parts.generator = data_parallel(parts.generator, device)
    if parts.heuristic is not None:
        parts.heuristic.to(device)
    return parts


def shard(model: nn.Module, device: torch.device, sharding: str, optim_cfg: OptimConfig) -> DistributedModelParallel:
    """``model`` with its item table sharded over the default process group (collective: every
    rank calls it with the same model and config)."""
    group = dist.group.WORLD
    fused = EMBEDDING_OPTIMIZERS[optim_cfg.embedding_optimizer].fused
    sharder = EmbeddingCollectionSharder(fused_params={
        "optimizer": getattr(EmbOptimType, fused), "learning_rate": optim_cfg.embedding_lr,
        "eps": EMBEDDING_EPS,
    })
    planner = EmbeddingShardingPlanner(
        topology=Topology(world_size=dist.get_world_size(group), compute_device=device.type),
        constraints={TABLE: ParameterConstraints(sharding_types=SHARDING_TYPES[sharding],
                                                 compute_kernels=[EmbeddingComputeKernel.FUSED.value])},
    )
    plan = planner.collective_plan(model, [sharder], group)
    return DistributedModelParallel(model, env=ShardingEnv.from_process_group(group), device=device,
                                    plan=plan, sharders=[sharder])


def sharded_optimizer(model: DistributedModelParallel, lr: float, weight_decay: float) -> ModelOptimizer:
    """AdamW over the dense parameters of a sharded model, plus its fused table optimizer."""
    dense = [p for _, p in in_backward_optimizer_filter(model.named_parameters())]
    return ModelOptimizer(adamw(dense, lr, weight_decay), dense, model.fused_optimizer, fused=True)


def data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` on ``device``, in DDP when there is more than one worker."""
    model = model.to(device)
    if dist.get_world_size() == 1:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, DistributedModelParallel)
