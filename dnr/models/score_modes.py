"""How a reranker uses the retriever scores: one registry entry per score mode.

Every mode shares the same backbone; a mode only decides whether the score is an input feature
and how the backbone's output ``f`` [B, L] (the head's last layer starts at zero, so f = 0 at
init) is combined with the score x [B, L] into the final logit:

=========  ===============  =================================  =====================
mode       score as input   logit                              order at init
=========  ===============  =================================  =====================
none       no               f                                  all tied
concat     yes              f                                  all tied
add        no               f + a * logit(x), a learned, a0=1  retriever order
weight     no               logit(x * sigmoid(f))              retriever order
denoise    yes              f + a * logit(x), a learned, a0=1  retriever order
=========  ===============  =================================  =====================

``add``, ``weight`` and ``denoise`` start exactly at the retriever's ranking ("the retriever order
is the floor": docs/method.md, "Score modes"), so the comparison between them measures what
each learns on top of the same starting point. ``concat`` is deliberately left without the
``logit(x)`` residual:
with it, it would be architecturally identical to ``denoise`` (``concat`` + ``add``); it is the
paper's "score as a feature" baseline, and ``none`` is plain PRM. A score fed as input enters on
its quantile scale (:mod:`dnr.models.score_quantiles`), through a network whose last layer starts
at zero.

The score mode is the architecture only. The DNR objectives (``dnr.enabled``: the denoising loss
on generated scores, then the adversarial generator) are a training recipe layered on any of
these modes (:mod:`dnr.training.step`), as the paper's model-agnostic framing has it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

SCORE_EPS = 1e-6
"""Scores are clamped to [eps, 1 - eps] before ``logit``; small so that distinct tiny retriever
scores stay distinct (ties would lose the retriever order)."""

Combine = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


def score_logit(scores: torch.Tensor) -> torch.Tensor:
    """logit(x) of scores [B, L] in [0, 1], finite everywhere."""
    return torch.logit(scores, eps=SCORE_EPS)


def _ignore_score(f: torch.Tensor, scores: torch.Tensor, scale: Optional[torch.Tensor]) -> torch.Tensor:
    return f


def _add_score(f: torch.Tensor, scores: torch.Tensor, scale: Optional[torch.Tensor]) -> torch.Tensor:
    return f + scale * score_logit(scores)


def _weight_by_score(f: torch.Tensor, scores: torch.Tensor, scale: Optional[torch.Tensor]) -> torch.Tensor:
    # p = x * sigmoid(f): the score reweights the reranker's probability. Computed in log space
    # so that the logit stays finite and differentiable for x and f near their extremes.
    log_p = torch.log(scores.clamp(SCORE_EPS, 1.0 - SCORE_EPS)) + torch.nn.functional.logsigmoid(f)
    return log_p - torch.log1p(-torch.exp(log_p))


@dataclass(frozen=True)
class ScoreMode:
    """One way of using retriever scores; see the module docstring for the table."""

    score_as_input: bool
    """The score [B, L] is embedded and added to each candidate token."""
    learned_scale: bool
    """The mode owns a learned scalar ``a`` (initialised to 1) passed to ``combine``."""
    combine: Combine
    """(f [B, L], scores [B, L], a or None) -> logits [B, L]."""


SCORE_MODES: dict[str, ScoreMode] = {
    "none": ScoreMode(score_as_input=False, learned_scale=False, combine=_ignore_score),
    "concat": ScoreMode(score_as_input=True, learned_scale=False, combine=_ignore_score),
    "add": ScoreMode(score_as_input=False, learned_scale=True, combine=_add_score),
    "weight": ScoreMode(score_as_input=False, learned_scale=False, combine=_weight_by_score),
    # the correction of the retriever's logit, conditioned on the score, with a learned scale
    "denoise": ScoreMode(score_as_input=True, learned_scale=True, combine=_add_score),
}
