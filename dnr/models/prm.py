"""PRM-style reranker: a transformer encoder over the candidate list, one logit per candidate.

Shapes: B requests, L candidates (retriever order, padded), H history items, d = ``d_model``.

Each candidate token is  item_embedding + rank_embedding + user_projection (+ score_embedding
when the score mode feeds the score as input). The user vector is an attention pooling of the
history embeddings. The encoder masks padding, so padding never changes a real candidate's logit.

The score enters on its quantile scale: ``score_quantiles`` (a buffer, saved and served with the
model) is the running sketch of the real scores the training step keeps, and the score network
reads cdf(x) in [0, 1], not x (calibrated scores sit near the click rate, where a raw x is nearly
constant). A list's rank embedding is its order by its own scores: the real list comes in the
retriever's order, and DNR's synthetic copy is re-ranked by its synthetic scores, so the rank never
tells the model the real order its scores contradict. ``model.rank_embedding=false`` drops it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from dnr.config import DataConfig, ModelConfig
from dnr.data.batch import RerankBatch
from dnr.models.item_table import ItemTable
from dnr.models.score_modes import SCORE_MODES
from dnr.models.score_quantiles import ScoreQuantiles

PAD_LOGIT = -1e4
"""Logit written at padding positions so that a descending sort puts them last (finite, so
that it survives bf16 and sigmoid/BCE without NaN)."""


class RerankerContext(NamedTuple):
    """Candidate and user features the model-based noise generator is conditioned on."""

    items: torch.Tensor
    """[B, L, d] candidate item embeddings (zero at padding)."""
    user: torch.Tensor
    """[B, d] user vector pooled from the history."""


class HistoryPooling(nn.Module):
    """Attention pooling of history embeddings [B, H, d] into one user vector [B, d].

    A learned "null item" is always in the pool, so an empty history yields a learned default
    user vector instead of a softmax over nothing (NaN).
    """

    def __init__(self, d_model: int):
        super().__init__()
        self.query = nn.Parameter(torch.randn(d_model) / math.sqrt(d_model))
        self.key = nn.Linear(d_model, d_model)
        self.null_item = nn.Parameter(torch.zeros(d_model))

    def forward(self, history: torch.Tensor, history_mask: torch.Tensor) -> torch.Tensor:
        """history [B, H, d], history_mask [B, H] bool -> user [B, d]."""
        batch = history.shape[0]
        values = torch.cat([self.null_item.expand(batch, 1, -1), history], dim=1)  # [B, H+1, d]
        keep = torch.cat([history_mask.new_ones(batch, 1), history_mask], dim=1)  # [B, H+1]
        attn = self.key(values) @ self.query / math.sqrt(self.query.numel())  # [B, H+1]
        weights = attn.masked_fill(~keep, float("-inf")).softmax(dim=1)
        return (weights.unsqueeze(-1) * values).sum(dim=1)


class PRMReranker(nn.Module):
    """q_theta(z | x, u): logits [B, L] for a ``RerankBatch``; the score mode is a registry entry."""

    def __init__(self, model_cfg: ModelConfig, data_cfg: DataConfig, table_device: str = "cpu"):
        super().__init__()
        d = model_cfg.d_model
        self.mode = SCORE_MODES[model_cfg.score_mode]
        self.max_list_len = data_cfg.max_list_len
        # one table for both id features: one lookup (one exchange when sharded) per forward
        self.item_embedding = ItemTable(data_cfg.num_buckets, d, ("candidates", "history"), table_device)
        self.rank_embedding = nn.Embedding(data_cfg.max_list_len, d) if model_cfg.rank_embedding else None
        self.score_quantiles = ScoreQuantiles()
        self.user_pooling = HistoryPooling(d)
        self.user_projection = nn.Linear(d, d)
        # A small MLP rather than a single Linear: a scalar score needs a non-linear embedding
        # for the encoder to use it as more than one direction in token space.
        self.score_embedding = (
            nn.Sequential(nn.Linear(1, d), nn.GELU(), nn.Linear(d, d)) if self.mode.score_as_input else None
        )
        if self.score_embedding is not None:  # starts at zero: the score adds nothing at init
            nn.init.zeros_(self.score_embedding[-1].weight)
            nn.init.zeros_(self.score_embedding[-1].bias)
        self.score_scale = nn.Parameter(torch.ones(())) if self.mode.learned_scale else None
        layer = nn.TransformerEncoderLayer(
            d, model_cfg.n_heads, model_cfg.ff_dim, model_cfg.dropout, activation="gelu",
            batch_first=True, norm_first=True,
        )
        # Pre-LN layers need the final norm; nested tensors are not supported with norm_first.
        self.encoder = nn.TransformerEncoder(
            layer, model_cfg.n_layers, norm=nn.LayerNorm(d), enable_nested_tensor=False
        )
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))
        # Zero-initialised last layer: f = 0 at init, so score-using modes start at the
        # retriever's order (see dnr.models.score_modes) and learn a correction from there.
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def context(self, batch: RerankBatch) -> RerankerContext:
        """Item embeddings [B, L, d] and user vector [B, d] of a batch (what depends on the ids
        only, not on the scores)."""
        items, history = self.item_embedding([(batch.item_ids, batch.mask),
                                              (batch.history_ids, batch.history_mask)])
        return RerankerContext(items, self.user_pooling(history, batch.history_mask))

    def forward(self, batch: RerankBatch, context: RerankerContext | None = None,
                extra_scores: torch.Tensor | None = None,
                extra_rows: torch.Tensor | None = None, rank_by_scores: bool = False) -> torch.Tensor:
        """Logits [B, L] of clicking each candidate; ``PAD_LOGIT`` where ``batch.mask`` is False.

        ``context``: this batch's :meth:`context`, when the caller already has it (the DNR
        generator half-step scores synthetic scores with the reranker frozen: no table lookup).
        ``extra_scores``: [B, L] other scores for the same lists (DNR's synthetic copy): logits
        [2B, L], those of ``batch.scores`` first. What does not depend on the scores (item and
        history lookups, user pooling and projection) is computed once for both; the result is
        the same as a forward over the batch stacked twice. With ``extra_rows`` (K request
        indices), ``extra_scores`` is [K, L], for those requests only: logits [B + K, L].
        The extra lists' rank embeddings are their order by ``extra_scores``; the batch's own are
        its list positions (the retriever's order), or its order by ``batch.scores`` with
        ``rank_by_scores`` (a batch whose scores were replaced by synthetic ones).
        """
        length = batch.list_len
        if length > self.max_list_len:
            raise ValueError(f"list length {length} exceeds data.max_list_len={self.max_list_len}")
        items, user = self.context(batch) if context is None else context
        tokens = items + self.user_projection(user).unsqueeze(1)
        scores, mask = batch.scores, batch.mask
        if self.rank_embedding is not None:
            ranks = (self.rank_embedding(rank_positions(scores, mask)) if rank_by_scores
                     else self.rank_embedding.weight[:length].expand_as(tokens))
        if extra_scores is not None:
            rows = slice(None) if extra_rows is None else extra_rows
            tokens, mask = torch.cat([tokens, tokens[rows]]), torch.cat([mask, mask[rows]])
            extra_scores = extra_scores.to(scores.dtype)
            scores = torch.cat([scores, extra_scores])
            if self.rank_embedding is not None:
                ranks = torch.cat([ranks, self.rank_embedding(rank_positions(extra_scores, batch.mask[rows]))])
        if self.rank_embedding is not None:
            tokens = tokens + ranks
        if self.score_embedding is not None:
            quantile = self.score_quantiles.cdf(scores).unsqueeze(-1).to(tokens.dtype)
            tokens = tokens + self.score_embedding(quantile)
        # A request with no real candidate would make every key masked and the softmax NaN;
        # such a row attends to its padding instead (its logits are overwritten below anyway).
        ignore = ~mask & mask.any(dim=1, keepdim=True)
        hidden = self.encoder(tokens, src_key_padding_mask=ignore)  # [B (+ K), L, d]
        f = self.head(hidden).squeeze(-1)
        logits = self.mode.combine(f, scores, self.score_scale)
        return logits.masked_fill(~mask, PAD_LOGIT)


def rank_positions(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[K, L] long: each candidate's 0-based position when its list is sorted by ``scores``
    descending (padding after every real candidate; ties keep the list's order)."""
    keyed = scores.float().masked_fill(~mask, float("-inf"))
    order = keyed.argsort(dim=1, descending=True, stable=True)
    return order.argsort(dim=1)
