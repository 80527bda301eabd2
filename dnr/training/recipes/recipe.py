"""What a family's recipe is: how it builds its parts and takes a step, from the whole config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch

    from dnr.config import JobConfig
    from dnr.training.parts import TrainParts


@dataclass(frozen=True)
class Recipe:
    """How one ``model.family`` builds its parts, takes a step and names its phase, in the manner
    of torchtitan's train specs: each reads the sections of the config it needs."""

    build_parts: Callable[["JobConfig", str], "TrainParts"]
    """(cfg, table_device) -> fresh unsharded parts (``table_device="meta"``: no item table allocated)."""
    step: Callable[..., dict[str, "torch.Tensor"]]
    """(batch, parts, global_step, cfg) -> loss terms (tensors; the caller copies them to the host)."""
    phase: Callable[["JobConfig", int], str]
    """(cfg, global_step) -> the phase recorded in the training progress."""
    loss_keys: tuple[str, ...]
    """Every key ``step`` may return: what the loop all-reduces and logs (checked each step)."""
