"""The retriever's own score scale: a running sketch of the real score distribution, its CDF and
inverse CDF.

Real retrievers do not emit scores uniform on [0, 1]. A calibrated one puts most candidates near
the click rate (a few percent), so noise drawn on [0, 1] as the DNR paper does it (x' = (1 -
lambda_c) z + lambda_c eps) lands on a range real lists never reach, and a histogram with linear
bins on [0, 1] sees the whole real distribution in two or three bins. This module moves both
onto the quantile scale of the real scores:

* the sketch is a fixed-size histogram of the real scores over ``BINS`` bins that are uniform in
  logit(x) on [-``LOGIT_RANGE``, ``LOGIT_RANGE``] (fine where calibrated scores live, and at
  both ends), its mass an EMA over training steps;
* ``cdf(x)`` maps a score to its quantile u in [0, 1] and ``icdf(u)`` maps back, both piecewise
  linear in x within a bin, so both are differentiable and invert each other;
* the noise generators draw u' = (1 - lambda_c) z + lambda_c eps (the paper's form) and the
  synthetic score is x' = icdf(u'): a positive lands in the top lambda_c-quantile range of the
  real scores, wherever they live (``dnr.noise_scale = quantile``);
* the reranker reads a score through ``cdf`` (a bounded, well-spread input), and L_x compares the
  generated quantiles with the uniform law (the real scores' law on their own quantile scale).

The sketch starts at the uniform law on [0, 1] (each bin's mass is its width in x), where
``cdf`` and ``icdf`` are the identity: on scores that are already uniform on [0, 1] everything
above reduces to the paper's form. Counts are sums, so sketches of several workers merge by
summing their batch counts (one all-reduce of ``BINS`` floats per step), and the mass is a
buffer of the reranker: checkpoints, warm starts and the served model carry it.
"""

from __future__ import annotations

import torch
from torch import nn

BINS = 512
"""Bins of the sketch (512 floats: a fixed size, whatever the traffic)."""
LOGIT_RANGE = 14.0
"""The bins are uniform in logit(x) on [-14, 14] (scores within 1e-6 of 0 or 1 share the end bins)."""
MASS_FLOOR = 1e-3
"""Share of the uniform prior mixed into the sketch, so every bin has mass, ``cdf`` is strictly
increasing and ``icdf`` is defined everywhere."""


class ScoreQuantiles(nn.Module):
    """Running histogram of real retriever scores [``BINS``] and its CDF / inverse CDF.

    Update it with :meth:`batch_counts` -> (all-reduce the counts across workers) -> :meth:`update`;
    every worker then folds in the same sums, so the sketch stays identical across ranks.
    """

    def __init__(self, bins: int = BINS, logit_range: float = LOGIT_RANGE):
        super().__init__()
        edges = torch.sigmoid(torch.linspace(-logit_range, logit_range, bins + 1, dtype=torch.float64))
        edges[0], edges[-1] = 0.0, 1.0
        edges = edges.float()
        self.bins = bins
        # derived from the bin count alone: not saved
        self.register_buffer("edges", edges, persistent=False)
        self.register_buffer("width", edges.diff(), persistent=False)
        self.register_buffer("mass", edges.diff().clone())
        """Probability of each bin (sums to 1); starts at the uniform law on [0, 1]."""
        self.register_buffer("num_updates", torch.tensor(0, dtype=torch.int64))
        self.register_buffer("auc", torch.tensor(0.5))
        """EMA of the real scores' per-request AUC against the labels (how well they rank clicks)."""
        self.register_buffer("auc_updates", torch.tensor(0, dtype=torch.int64))

    # ---- estimation

    def batch_counts(self, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Counts [bins] (float) of the scores [B, L] at ``mask`` (no host sync)."""
        index = self._bin(scores.detach().float())
        weights = mask.float().flatten()
        return torch.zeros(self.bins, device=scores.device).scatter_add_(0, index.flatten(), weights)

    @torch.no_grad()
    def update(self, counts: torch.Tensor, decay: float, auc_sums: torch.Tensor | None = None) -> None:
        """Fold counts from :meth:`batch_counts` (possibly summed over workers) into the EMA, and
        ``auc_sums`` from :func:`batch_auc_sums` into the AUC's.

        A step without scores changes nothing; the first one with scores replaces the prior
        instead of being averaged with it."""
        total = counts.sum()
        seen = total > 0
        keep = torch.where(seen, torch.where(self.num_updates > 0, decay, 0.0), 1.0)
        self.mass.mul_(keep).add_((1 - keep) * counts / total.clamp_min(1e-12))
        self.num_updates.add_(seen.long())
        if auc_sums is not None:
            auc_total, requests = auc_sums[0], auc_sums[1]
            seen = requests > 0
            keep = torch.where(seen, torch.where(self.auc_updates > 0, decay, 0.0), 1.0)
            self.auc.mul_(keep).add_((1 - keep) * auc_total / requests.clamp_min(1.0))
            self.auc_updates.add_(seen.long())

    # ---- the maps

    def _bin(self, x: torch.Tensor) -> torch.Tensor:
        """Bin index of each score (x clamped to [0, 1])."""
        return torch.bucketize(x.clamp(0.0, 1.0), self.edges[1:-1].to(x.dtype))

    def _effective(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mass per bin with the prior's floor [bins], cumulative mass at the left edges [bins])."""
        mass = (self.mass.float() + MASS_FLOOR * self.width) / (1.0 + MASS_FLOOR)
        return mass, mass.cumsum(0) - mass

    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        """Quantile u in [0, 1] of each score x (any shape); differentiable in x."""
        x = x.float().clamp(0.0, 1.0)
        mass, left = self._effective()
        k = self._bin(x)
        u = left[k] + (x - self.edges[k]) / self.width[k] * mass[k]
        return u.clamp(0.0, 1.0)

    def icdf(self, u: torch.Tensor) -> torch.Tensor:
        """Score x in [0, 1] at each quantile u (any shape); differentiable in u."""
        u = u.float().clamp(0.0, 1.0)
        mass, left = self._effective()
        k = torch.bucketize(u, left[1:].contiguous())
        x = self.edges[k] + (u - left[k]) / mass[k] * self.width[k]
        return x.clamp(0.0, 1.0)

    def quantiles(self, probs: torch.Tensor) -> torch.Tensor:
        """Scores at the given probabilities (for reports: the median is ``quantiles(0.5)``)."""
        return self.icdf(probs)


def batch_auc_sums(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[2]: the sum over requests of each request's AUC of ``scores`` against ``labels`` at
    ``mask`` (ties count one half), and the number of requests with a positive and a negative.
    Sums, so that workers merge them by an all-reduce."""
    x = scores.detach().float()
    positive, negative = mask & (labels > 0), mask & (labels <= 0)
    pairs = positive.unsqueeze(2) & negative.unsqueeze(1)  # [B, L, L]: (positive i, negative j)
    diff = x.unsqueeze(2) - x.unsqueeze(1)
    wins = torch.where(pairs, (diff > 0).float() + 0.5 * (diff == 0).float(), 0.0).sum(dim=(1, 2))
    count = pairs.sum(dim=(1, 2))
    ranked = count > 0
    per_request = torch.where(ranked, wins / count.clamp_min(1), 0.0)
    return torch.stack([per_request.sum(), ranked.sum().float()])
