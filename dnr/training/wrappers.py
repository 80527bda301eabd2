"""Model wrappers and temporary module states, for code that takes a model that may be wrapped
(DDP, DataParallel, TorchRec DistributedModelParallel) and must not leave it changed."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel
from torchrec.distributed import DistributedModelParallel


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP / DataParallel / TorchRec DistributedModelParallel wrapper, else
    the model itself."""
    if isinstance(model, DistributedModelParallel):
        return model.module  # DMP's own property: the model inside every wrapper
    return model.module if isinstance(model, (DistributedDataParallel, DataParallel)) else model


@contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) for the duration, restoring the module's training flag on exit."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Turn ``requires_grad`` off for the module's trainable parameters, restoring it on exit.
    A sharded table's weights are views into TorchRec's fused kernel, not leaves, and are left
    alone: nothing under ``frozen`` looks them up (see ``dnr.training.step.generator_update``)."""
    params = [p for p in module.parameters() if p.requires_grad and p.is_leaf]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
