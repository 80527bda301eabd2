"""DeGRe, this project's interpretation: a lookahead evaluator and a greedy list generator.

The source is an abstract only (arXiv 2605.25749, "DeGRe: Dense-supervised Generative Reranking
for Recommendation"; no public code): an offline Lookahead Evaluator trained by cumulative
regression mines high-value sequences with beam search, and its step-wise value estimates
become dense supervision for a light online generator that decodes the list greedily in one
pass. Everything below that the abstract does not say is a choice of this project:

* **Utility.** The utility of a list is its expected number of clicks. The evaluator predicts,
  for the item placed at step t after the items of steps < t, its click probability there: the
  value increment Delta_t in (0, 1). The cumulative utility of the prefix 1..t is
  V_t = Delta_1 + ... + Delta_t.
* **Cumulative regression.** The logged list of a request is its labelled candidates
  (``label_mask``): the logs record which items were shown and clicked, not a presentation order
  beyond the retriever's. The evaluator regresses V_t on the logged clicks Y_t = z_1 + ... + z_t
  for every prefix t (``dnr.losses.cumulative_regression``, each squared error divided by t, the
  growth of Y_t's variance), plus ``degre.increment_weight`` x the BCE of each increment on its
  own click: a direct signal for each step's increment, which the sums of the regression give
  only through their differences.
* **Training order.** Each step, the logged list is regressed in a fresh random order
  (``shuffled_logged_order``). Labels are per candidate, so any order of the logged items is a
  valid prefix sequence for the same clicks; in retriever order, step, retriever rank and the
  prefix's content would always coincide, while beam search asks the evaluator about candidates
  at steps and after prefixes that order never shows.
* **Unexposed permutation space.** Here: the ordered K-lists over *all* real candidates of a
  request (unlabelled ones included) other than the logged order. The logs never label an item
  at another position or after other items, so the evaluator extrapolates there through what it
  learned from the logged prefixes; mining trusts it as far as it generalises.
* **Mining** (:mod:`dnr.models.degre_search`): beam search of width ``degre.beam_width`` over
  K = ``degre.list_len`` steps maximising V_K; the best sequence is replayed through the
  evaluator to read, at each step t, the increment of every remaining candidate.
* **Dense targets.** Step t's soft target is softmax(Delta_t(c) / temperature) over the remaining
  candidates c given the best sequence's first t - 1 items; increments are probabilities, so the
  default temperature (0.05) is small. A cross-entropy on the beam's own choice at each step
  (weight ``degre.beam_weight``) carries what the beam's lookahead found beyond the per-step
  argmax. The ablation ``degre.dense=false`` replaces both by one-hot targets from the logged
  list with its clicked items first (sparse supervision, no evaluator in the loop).
* **Generator** (:class:`DeGReGenerator`, the served model): the same building blocks as the
  evaluator at ``model.*`` sizes. At step t every candidate attends to the items already placed
  (single-head attention with a learned "nothing placed" key) and gets a logit; placed items and
  padding are excluded. Online it decodes K items greedily in one pass, with no evaluator; every
  other candidate is ranked after them by the logits of step K + 1. The placed items enter each
  candidate's logit through a bilinear interaction term (see :class:`PlacedAttentionHead`).
* **Retriever scores** enter both models through ``model.score_mode`` exactly as in PRM (score
  embedding and/or a combination with logit(x)); with ``denoise``, ``add`` or ``weight`` the
  zero-initialised heads start both models at the retriever's scores, so greedy decoding starts
  at the retriever order (docs/method.md, "Score modes": "the retriever order is the floor").
* **Not done**: the paper's evaluator may look further ahead (e.g. score a candidate by the best
  completion through it); here the lookahead is the beam, and the targets are one-step
  increments along the best beam.

Shapes: B requests, L candidates, H history items, d model width, K decoded steps, N any leading
batch (B, B * K or B * beam width).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from dnr.config import DataConfig, DeGReConfig, ModelConfig
from dnr.data.batch import RerankBatch
from dnr.models.item_table import ItemTable
from dnr.models.prm import PAD_LOGIT, HistoryPooling
from dnr.models.score_modes import SCORE_MODES

MASKED = -1e9
"""Logit of a candidate that cannot be chosen at a step (finite: no NaN from a row with none)."""


class CandidateEncoder(nn.Module):
    """Candidates of a request -> contextual embeddings [B, L, d], like the PRM backbone:
    item + retriever-rank + user (+ score, when the score mode embeds it) -> transformer encoder."""

    def __init__(self, d: int, n_layers: int, n_heads: int, ff_dim: int, dropout: float,
                 score_as_input: bool, data_cfg: DataConfig, table_device: str = "cpu"):
        super().__init__()
        self.max_list_len = data_cfg.max_list_len
        self.item_embedding = ItemTable(data_cfg.num_buckets, d, ("candidates", "history"), table_device)
        self.rank_embedding = nn.Embedding(data_cfg.max_list_len, d)
        self.user_pooling = HistoryPooling(d)
        self.user_projection = nn.Linear(d, d)
        self.score_embedding = (nn.Sequential(nn.Linear(1, d), nn.GELU(), nn.Linear(d, d))
                                if score_as_input else None)
        layer = nn.TransformerEncoderLayer(d, n_heads, ff_dim, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, norm=nn.LayerNorm(d),
                                             enable_nested_tensor=False)

    def forward(self, batch: RerankBatch) -> torch.Tensor:
        """Embeddings [B, L, d] of every candidate (padding rows hold values that nothing reads)."""
        length = batch.list_len
        if length > self.max_list_len:
            raise ValueError(f"list length {length} exceeds data.max_list_len={self.max_list_len}")
        items, history = self.item_embedding([(batch.item_ids, batch.mask),
                                              (batch.history_ids, batch.history_mask)])
        user = self.user_pooling(history, batch.history_mask)
        tokens = (items + self.rank_embedding.weight[:length]
                  + self.user_projection(user).unsqueeze(1))
        if self.score_embedding is not None:
            tokens = tokens + self.score_embedding(batch.scores.unsqueeze(-1).to(tokens.dtype))
        ignore = ~batch.mask & batch.mask.any(dim=1, keepdim=True)  # an empty row attends to padding
        return self.encoder(tokens, src_key_padding_mask=ignore)


class PlacedAttentionHead(nn.Module):
    """One logit per query candidate given the items already placed and the step number.

    f = mlp(candidate) + interaction + step_bias[step]. The interaction is bilinear between the
    candidate and what it attends to among the placed items (one head, plus a learned "nothing
    placed" key, so an empty prefix is well defined): it is how a placed item can raise or lower
    a candidate's value (redundancy, complementarity). The context enters the logit additively,
    not the candidate's hidden state, so the item's own signal reaches the logit whatever the
    prefix (bench/README.md "What was tried", DeGRe). The MLP's last layer, the value
    projection and the step bias start at zero, so f = 0 at init and the score mode starts at
    the retriever.
    """

    def __init__(self, d: int, max_steps: int):
        super().__init__()
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.null_key = nn.Parameter(torch.zeros(1, 1, d))
        self.step_bias = nn.Embedding(max_steps, 1)
        self.mlp = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))
        for tensor in (self.value.weight, self.value.bias, self.step_bias.weight,
                       self.mlp[-1].weight, self.mlp[-1].bias):
            nn.init.zeros_(tensor)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, allowed: torch.Tensor,
                step: torch.Tensor) -> torch.Tensor:
        """queries [N, Q, d], keys [N, S, d], allowed [N, Q, S] or [N, 1, S] bool (key s is placed
        before query q), step [N, Q] or [N, 1] long -> f [N, Q]."""
        n, _, d = keys.shape
        keys = torch.cat([self.null_key.expand(n, 1, d), keys], dim=1)  # [N, S+1, d]
        allowed = torch.cat([allowed.new_ones(allowed.shape[:-1] + (1,)), allowed], dim=-1)
        q = self.query(queries)
        attn = q @ self.key(keys).transpose(1, 2) / math.sqrt(d)  # [N, Q, S+1]
        weights = attn.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
        placed = weights @ self.value(keys)  # [N, Q, d]
        interaction = (q * placed).sum(dim=-1) / math.sqrt(d)
        step = step.clamp_max(self.step_bias.num_embeddings - 1)  # a K beyond the list shares the last row
        return self.mlp(queries).squeeze(-1) + interaction + self.step_bias(step).squeeze(-1)


class _StepScorer(nn.Module):
    """Encoder + head + score mode: what the evaluator and the generator share."""

    def __init__(self, d: int, n_layers: int, n_heads: int, ff_dim: int, dropout: float,
                 score_mode: str, data_cfg: DataConfig, table_device: str = "cpu"):
        super().__init__()
        self.mode = SCORE_MODES[score_mode]
        self.encoder = CandidateEncoder(d, n_layers, n_heads, ff_dim, dropout, self.mode.score_as_input,
                                        data_cfg, table_device)
        # Steps 0..L: the generator scores the rest of the list at step K, K <= L in practice.
        self.head = PlacedAttentionHead(d, data_cfg.max_list_len + 1)
        self.score_scale = nn.Parameter(torch.ones(())) if self.mode.learned_scale else None

    def encode(self, batch: RerankBatch) -> torch.Tensor:
        return self.encoder(batch)

    def step_logits(self, h: torch.Tensor, scores: torch.Tensor, placed: torch.Tensor,
                    step: torch.Tensor) -> torch.Tensor:
        """Logits [N, L] of every candidate at a step: h [N, L, d], scores [N, L], placed [N, L]
        bool (already chosen), step [N, 1] long (how many are placed)."""
        f = self.head(h, h, placed.unsqueeze(1), step)
        return self.mode.combine(f, scores, self.score_scale)

    def ordered_logits(self, h: torch.Tensor, scores: torch.Tensor, order: torch.Tensor,
                       order_valid: torch.Tensor) -> torch.Tensor:
        """Logits [B, T] of the item at each position of ``order`` [B, T] (indices into L) given
        the valid items before it: all T steps of a teacher-forced pass at once."""
        index = order.clamp_min(0)
        h_o = h.gather(1, index.unsqueeze(-1).expand(-1, -1, h.shape[-1]))  # [B, T, d]
        length = order.shape[1]
        before = torch.ones(length, length, dtype=torch.bool, device=order.device).tril(-1)
        allowed = before.unsqueeze(0) & order_valid.unsqueeze(1)  # [B, T, T]
        step = torch.arange(length, device=order.device).expand_as(order)
        f = self.head(h_o, h_o, allowed, step)
        return self.mode.combine(f, scores.gather(1, index), self.score_scale)


class LookaheadEvaluator(nn.Module):
    """The offline evaluator: the value increment Delta_t in (0, 1) of an item placed at step t
    after a given prefix. Training only (like the DNR noise generator); never served."""

    def __init__(self, model_cfg: ModelConfig, degre_cfg: DeGReConfig, data_cfg: DataConfig,
                 table_device: str = "cpu"):
        super().__init__()
        d = degre_cfg.evaluator_d_model
        self.net = _StepScorer(d, degre_cfg.evaluator_layers, degre_cfg.evaluator_heads, 2 * d,
                               model_cfg.dropout, model_cfg.score_mode, data_cfg, table_device)

    def encode(self, batch: RerankBatch) -> torch.Tensor:
        """Candidate embeddings [B, L, d] for :meth:`increments` (computed once per search)."""
        return self.net.encode(batch)

    def increments(self, h: torch.Tensor, scores: torch.Tensor, placed: torch.Tensor,
                   step: torch.Tensor) -> torch.Tensor:
        """Delta [N, L] of placing each candidate next, after the ``placed`` [N, L] items, at step
        ``step`` [N, 1] (= number placed). Entries of placed or padding candidates are meaningless."""
        return torch.sigmoid(self.net.step_logits(h, scores, placed, step))

    def forward(self, batch: RerankBatch, order: torch.Tensor, order_valid: torch.Tensor) -> torch.Tensor:
        """Logits [B, T] of the increments of each item of ``order`` [B, T] (candidate indices,
        -1 = none) given the items before it; ``order_valid`` [B, T] bool marks real entries.
        Delta = sigmoid(logits), V = Delta.cumsum(1)."""
        return self.net.ordered_logits(self.net.encode(batch), batch.scores, order, order_valid)


def placed_before_each_step(sequence: torch.Tensor, list_len: int) -> torch.Tensor:
    """[B, K, L] bool: which candidates the first t items of ``sequence`` [B, K] (-1 = none) hold."""
    chosen = sequence.unsqueeze(-1) == torch.arange(list_len, device=sequence.device)  # [B, K, L]
    return (chosen.long().cumsum(dim=1) - chosen.long()) > 0


def ranking_scores(sequence: torch.Tensor, rest_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Ranking scores [B, L], higher = earlier: the K items of ``sequence`` [B, K] (-1 = none) get
    K, K-1, ..., 1 in decoded order; every other real candidate gets a score <= -1 in the order
    of ``rest_logits`` [B, L]; padding gets ``PAD_LOGIT``."""
    steps = sequence.shape[1]
    chosen = sequence.unsqueeze(-1) == torch.arange(mask.shape[1], device=mask.device)  # [B, K, L]
    rank_value = torch.arange(steps, 0, -1, device=mask.device, dtype=rest_logits.dtype)
    decoded = (chosen * rank_value.view(1, -1, 1)).sum(dim=1)  # [B, L]
    is_decoded = chosen.any(dim=1)
    rest = rest_logits.float().masked_fill(is_decoded | ~mask, MASKED)
    rest = rest - rest.amax(dim=1, keepdim=True) - 1.0  # the best remaining candidate gets -1
    scores = torch.where(is_decoded, decoded.float(), rest.clamp_min(PAD_LOGIT / 2))
    return scores.masked_fill(~mask, PAD_LOGIT)


class DeGReGenerator(nn.Module):
    """The served DeGRe model: greedy decoding of K items in one pass; a drop-in for PRMReranker.

    ``forward(batch)`` returns ranking scores [B, L] (see :func:`ranking_scores`);
    ``forward(batch, teacher)`` returns the teacher-forced step logits [B, K, L] that the
    distillation trains (one ``forward`` for both, so DDP sees the training pass).

    K is a persisted buffer: a generator built with the default K and loaded from a checkpoint
    trained with another ``degre.list_len`` decodes the checkpoint's K.
    """

    def __init__(self, model_cfg: ModelConfig, data_cfg: DataConfig, decode_len: Optional[int] = None,
                 table_device: str = "cpu"):
        super().__init__()
        self.net = _StepScorer(model_cfg.d_model, model_cfg.n_layers, model_cfg.n_heads, model_cfg.ff_dim,
                               model_cfg.dropout, model_cfg.score_mode, data_cfg, table_device)
        self.decode_len = DeGReConfig().list_len if decode_len is None else decode_len
        self.register_buffer("steps", torch.tensor(self.decode_len, dtype=torch.int64))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if prefix + "steps" in state_dict:
            self.decode_len = int(state_dict[prefix + "steps"])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, batch: RerankBatch, teacher: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.net.encode(batch)
        if teacher is not None:
            return self._teacher_forced(h, batch, teacher)
        return self._greedy(h, batch)

    def _greedy(self, h: torch.Tensor, batch: RerankBatch) -> torch.Tensor:
        """A fixed K-step loop with tensor-only choices (traceable by torch.export)."""
        mask, candidates = batch.mask, torch.arange(batch.mask.shape[1], device=h.device)
        placed = torch.zeros_like(mask)
        step = torch.zeros(mask.shape[0], 1, dtype=torch.long, device=h.device)
        sequence = []
        for t in range(self.decode_len):
            logits = self.net.step_logits(h, batch.scores, placed, step + t)
            open_ = mask & ~placed
            pick = logits.masked_fill(~open_, MASKED).argmax(dim=1)  # [B]
            has = open_.any(dim=1)  # a row with fewer than K candidates stops choosing
            sequence.append(torch.where(has, pick, -1))
            placed = placed | ((candidates == pick.unsqueeze(1)) & has.unsqueeze(1))
        rest = self.net.step_logits(h, batch.scores, placed, step + self.decode_len)
        return ranking_scores(torch.stack(sequence, dim=1), rest, mask)

    def _teacher_forced(self, h: torch.Tensor, batch: RerankBatch, teacher: torch.Tensor) -> torch.Tensor:
        """Logits [B, K, L] at each step t given teacher [B, K]'s first t items (all steps at once)."""
        b, length, d = h.shape
        steps = teacher.shape[1]
        placed = placed_before_each_step(teacher, length)  # [B, K, L]
        step = torch.arange(steps, device=h.device).view(1, steps, 1).expand(b, steps, 1)
        logits = self.net.step_logits(
            h.unsqueeze(1).expand(b, steps, length, d).reshape(b * steps, length, d),
            batch.scores.unsqueeze(1).expand(b, steps, length).reshape(b * steps, length),
            placed.reshape(b * steps, length), step.reshape(b * steps, 1))
        return logits.view(b, steps, length)
