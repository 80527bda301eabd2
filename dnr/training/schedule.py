"""The learning-rate schedule of a run: a linear warm-up, then a linear or cosine decay.

The factor is a pure function of the steps this run has done (``epoch * steps_per_epoch +
step_in_epoch`` of the progress record), so a resumed run continues the same curve and a daily
warm start begins a new one. It scales every optimizer of the parts, the fused TorchRec table
optimizers too (their kernel reads the learning rate when their ``step()`` is called).
"""

from __future__ import annotations

import math

from dnr.config import OptimConfig


def lr_factor(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Multiplier of the configured learning rates at this run's ``step`` (0-based) of ``total_steps``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    decay_steps = total_steps - cfg.warmup_steps
    if cfg.lr_decay == "none" or decay_steps <= 1:
        return 1.0
    t = min((step - cfg.warmup_steps) / (decay_steps - 1), 1.0)
    shape = 1.0 - t if cfg.lr_decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * t))
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * shape


def is_constant(cfg: OptimConfig) -> bool:
    return cfg.warmup_steps == 0 and cfg.lr_decay == "none"
