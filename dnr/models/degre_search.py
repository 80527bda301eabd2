"""DeGRe offline lookahead mining: beam search with the evaluator, and the dense targets.

All functions here run without gradients on an unwrapped :class:`LookaheadEvaluator` (mining
is a data-generation step, not a training pass). Sequences are [B, K] (or [B, W, K]) candidate
indices into the batch's L positions, -1 where a request has no candidate left to place.
See :mod:`dnr.models.degre` for the interpretation these implement.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from dnr.data.batch import RerankBatch
from dnr.models.degre import MASKED, LookaheadEvaluator, placed_before_each_step, ranking_scores


class Order(NamedTuple):
    """A list as candidate indices [B, T] (-1 past its end) and which entries are real [B, T]."""

    index: torch.Tensor
    valid: torch.Tensor


def _sorted_order(key: torch.Tensor, keep: torch.Tensor) -> Order:
    """Indices of ``keep`` candidates sorted by ``key`` [B, L] (stable: ties stay in retriever order)."""
    index = key.argsort(dim=1, stable=True)
    valid = torch.arange(key.shape[1], device=key.device) < keep.sum(dim=1, keepdim=True)
    return Order(index.masked_fill(~valid, -1), valid)


def logged_order(batch: RerankBatch) -> Order:
    """The logged list: labelled candidates (``label_mask``) in retriever order."""
    return _sorted_order((~batch.label_mask).long(), batch.label_mask)


def shuffled_logged_order(batch: RerankBatch) -> Order:
    """The logged list's items in a fresh random order: the evaluator's training lists (see
    :mod:`dnr.models.degre`, "Training order")."""
    key = 2.0 * (~batch.label_mask).float() + torch.rand(batch.label_mask.shape, device=batch.mask.device)
    return _sorted_order(key, batch.label_mask)


def prefix_utility(batch: RerankBatch, order: Order) -> torch.Tensor:
    """Y [B, T]: the logged clicks of the first t items of ``order`` (the cumulative utility the
    evaluator regresses); constant past the end of the list."""
    labels = batch.labels.gather(1, order.index.clamp_min(0))
    return torch.where(order.valid, labels, 0.0).cumsum(dim=1)


def clicks_first_order(batch: RerankBatch) -> Order:
    """The logged list with its clicked items first (the no-dense-supervision ablation's teacher)."""
    key = 2 * (~batch.label_mask).long() + (batch.labels <= 0).long()
    return _sorted_order(key, batch.label_mask)


class BeamResult(NamedTuple):
    sequences: torch.Tensor
    """[B, W, K] beams, best first; -1 where a request ran out of candidates."""
    values: torch.Tensor
    """[B, W] predicted cumulative utility V_K of each beam; -inf for a beam that does not exist
    (a request with fewer than W distinct K-lists)."""


@torch.no_grad()
def beam_search(evaluator: LookaheadEvaluator, batch: RerankBatch, beam_width: int, steps: int) -> BeamResult:
    """The ``beam_width`` K-lists of highest V_K = sum of increments found by beam search.

    Every real candidate can be placed (unlabelled ones too). At step 0 only one beam is alive,
    so beams never duplicate; a beam with no candidate left extends with "none" at no gain, so
    requests shorter than K keep their beams comparable.
    """
    mask = batch.mask
    b, length = mask.shape
    w = beam_width
    h = evaluator.encode(batch)
    h_beams = h.unsqueeze(1).expand(b, w, length, h.shape[-1]).reshape(b * w, length, h.shape[-1])
    x_beams = batch.scores.unsqueeze(1).expand(b, w, length).reshape(b * w, length)
    candidates = torch.arange(length, device=mask.device)
    values = torch.full((b, w), float("-inf"), device=mask.device)
    values[:, 0] = 0.0
    placed = torch.zeros(b, w, length, dtype=torch.bool, device=mask.device)
    sequences = torch.full((b, w, 0), -1, dtype=torch.long, device=mask.device)
    for t in range(steps):
        step = torch.full((b * w, 1), t, dtype=torch.long, device=mask.device)
        gain = evaluator.increments(h_beams, x_beams, placed.view(b * w, length), step).view(b, w, length)
        open_ = mask.unsqueeze(1) & ~placed
        extend = torch.where(open_, values.unsqueeze(-1) + gain.float(), float("-inf"))
        stay = torch.where(open_.any(dim=-1), float("-inf"), values).unsqueeze(-1)  # "none", at no gain
        values, flat = torch.cat([extend, stay], dim=-1).view(b, w * (length + 1)).topk(w, dim=1)
        parent, choice = flat // (length + 1), flat % (length + 1)
        placed = placed.gather(1, parent.unsqueeze(-1).expand(b, w, length))
        placed = placed | (candidates == choice.unsqueeze(-1))  # choice == length adds nothing
        sequences = torch.cat([sequences.gather(1, parent.unsqueeze(-1).expand(b, w, t)),
                               torch.where(choice == length, -1, choice).unsqueeze(-1)], dim=-1)
    return BeamResult(sequences, values)


@torch.no_grad()
def step_increments(evaluator: LookaheadEvaluator, batch: RerankBatch, sequence: torch.Tensor) -> tuple[
        torch.Tensor, torch.Tensor]:
    """Increments [B, K, L] of every candidate at each step t after ``sequence`` [B, K]'s first t
    items, and which candidates remain open there [B, K, L] (real and not yet placed)."""
    b, steps = sequence.shape
    length = batch.list_len
    h = evaluator.encode(batch)
    placed = placed_before_each_step(sequence, length)  # [B, K, L]
    step = torch.arange(steps, device=h.device).view(1, steps, 1).expand(b, steps, 1)
    gain = evaluator.increments(
        h.unsqueeze(1).expand(b, steps, length, h.shape[-1]).reshape(b * steps, length, h.shape[-1]),
        batch.scores.unsqueeze(1).expand(b, steps, length).reshape(b * steps, length),
        placed.reshape(b * steps, length), step.reshape(b * steps, 1)).view(b, steps, length)
    return gain.float(), batch.mask.unsqueeze(1) & ~placed


def soft_targets(gain: torch.Tensor, open_: torch.Tensor, temperature: float) -> torch.Tensor:
    """Dense targets [B, K, L]: softmax(gain / temperature) over the open candidates of each step;
    0 elsewhere, and an all-zero row at a step with no open candidate."""
    logits = (gain / temperature).masked_fill(~open_, MASKED)
    return torch.where(open_, logits.softmax(dim=-1), 0.0)


def one_hot_targets(sequence: torch.Tensor, list_len: int) -> torch.Tensor:
    """[B, K, L] float: 1 at each step's item of ``sequence`` [B, K] (an all-zero row at -1)."""
    return (sequence.unsqueeze(-1) == torch.arange(list_len, device=sequence.device)).float()


@torch.no_grad()
def evaluator_ranking(evaluator: LookaheadEvaluator, batch: RerankBatch, steps: int, beam_width: int = 1) -> torch.Tensor:
    """Ranking scores [B, L] from the evaluator alone: the best beam (greedy for width 1) first,
    then the other candidates by their increment after it. Offline only: it needs the evaluator."""
    best = beam_search(evaluator, batch, beam_width, steps).sequences[:, 0]  # [B, K]
    placed = (best.unsqueeze(-1) == torch.arange(batch.list_len, device=best.device)).any(dim=1)
    step = torch.full((best.shape[0], 1), steps, dtype=torch.long, device=best.device)
    rest = evaluator.increments(evaluator.encode(batch), batch.scores, placed, step)
    return ranking_scores(best, rest, batch.mask)
