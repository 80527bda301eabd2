"""The training recipe's pure parts: the learning-rate schedule, the hash hold-out, the choice of
the checkpoint to register, and their config checks."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
import torch
from ray.train import Checkpoint

from dnr.config import OptimConfig, ValidationConfig, load_config
from dnr.data.validate import holdout_mask
from dnr.training.optimizers import ModelOptimizer
from dnr.training.schedule import lr_factor
from dnr.daily.register import registered_checkpoint
from dnr.training.validation import SCORE_KEY, UNSCORED


def test_warmup_then_cosine_decay_reaches_the_floor_at_the_last_step():
    cfg = OptimConfig(warmup_steps=4, lr_decay="cosine", min_lr_ratio=0.1)
    factors = [lr_factor(s, 20, cfg) for s in range(20)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factors[4] == pytest.approx(1.0) and factors[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[4:], factors[5:])), "the decay must not rise"
    linear = OptimConfig(lr_decay="linear", min_lr_ratio=0.0)
    assert [lr_factor(s, 5, linear) for s in range(5)] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    assert lr_factor(123, 10, OptimConfig()) == 1.0  # the default: constant


def test_scale_lr_multiplies_the_built_rates_of_every_group():
    dense = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    table = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.2)
    opt = ModelOptimizer(dense, [], table)
    opt.scale_lr(0.5)
    opt.scale_lr(0.5)  # from the built rate, not compounded
    assert dense.param_groups[0]["lr"] == pytest.approx(5e-4)
    assert table.param_groups[0]["lr"] == pytest.approx(0.1)


def test_the_holdout_is_a_stable_hashed_fraction():
    ids = pa.array([f"req-{i}" for i in range(20_000)])
    held = holdout_mask(ids, 0.1)
    assert abs(held.mean() - 0.1) < 0.01
    assert np.array_equal(held, holdout_mask(ids, 0.1)), "the same ids must be held out every time"
    assert np.array_equal(held[:500], holdout_mask(ids[:500], 0.1)), "membership depends on the id alone"
    assert not holdout_mask(ids, 0.0).any()
    assert (held <= holdout_mask(ids, 0.2)).all(), "a larger fraction holds out a superset"


def test_the_best_scored_checkpoint_is_registered_not_the_last(tmp_path):
    def checkpoint(name):
        (tmp_path / name).mkdir()
        return Checkpoint.from_directory(str(tmp_path / name))

    best, other, last = checkpoint("a"), checkpoint("b"), checkpoint("c")
    curve = [[0, 0.30], [2, 0.42], [4, 0.40], [6, 0.41]]
    fit = SimpleNamespace(
        checkpoint=last,
        metrics={"global_step": 6, SCORE_KEY: 0.41, "valid/curve": curve, "train/loss_theta": 0.5},
        best_checkpoints=[(other, {"global_step": 4, SCORE_KEY: 0.40}),
                          (best, {"global_step": 2, SCORE_KEY: 0.42}),
                          (last, {"global_step": 6, SCORE_KEY: UNSCORED})])
    chosen, metrics = registered_checkpoint(fit, validating=True)
    assert chosen is best
    assert metrics["global_step"] == 2 and metrics["train/last_global_step"] == 6
    assert metrics["valid/registered"] == 0.42 and metrics["valid/curve"] == curve
    # without validation: the last one, and only numeric metrics
    chosen, metrics = registered_checkpoint(fit, validating=False)
    assert chosen is last and "valid/curve" not in metrics
    # validation on but nothing scored (an empty hold-out): the last one
    fit.best_checkpoints = [(last, {"global_step": 6, SCORE_KEY: UNSCORED}), (other, {"global_step": 4, SCORE_KEY: None})]
    assert registered_checkpoint(fit, validating=True)[0] is last


@pytest.mark.parametrize("override, field", [
    ("validation.fraction=1.0", "validation.fraction"),
    ("validation.metric=NDCG", "validation.metric"),
    ("validation.every_steps=0", "validation.every_steps"),
    ("optim.lr_decay=step", "optim.lr_decay"),
    ("optim.min_lr_ratio=1.5", "optim.min_lr_ratio"),
])
def test_bad_recipe_values_are_refused_naming_the_field(override, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        load_config(None, [override])


def test_validation_is_off_by_default():
    assert ValidationConfig().fraction == 0.0
