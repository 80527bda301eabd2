"""The DNR objectives. Models return logits; every loss lives here.

Notation: logits [B, L] from the reranker q_theta, labels z [B, L] in {0, 1}, ``mask`` [B, L]
bool of the candidates whose label counts (``RerankBatch.label_mask``).

* L_direct = BCE(q(z | x), z)   on real scores          -> :func:`masked_bce`
* L_z      = BCE(q(z | x'), z)  on generated scores     -> :func:`masked_bce`
* L_adv    = -BCE(q(z | x'), z) minimised over phi      -> :func:`adversarial_loss`
* L_x      = KL(p_phi(x') || p_x(x))  on the quantile scale -> :data:`LX_ESTIMATORS`

Masked means are over the labelled candidates of the whole batch (not a mean of per-request
means), so a request without labels contributes nothing and a batch without labels gives 0.

L_x estimators work on the quantile scale of the real scores (:mod:`dnr.models.score_quantiles`):
the generated scores x' are mapped through the running real CDF, u = F(x'), and compared with
the uniform law, which is the real scores' own law on that scale. This is KL(p_phi(x') || p_x(x))
measured on bins that each hold the same share of real scores, so a calibrated retriever whose
scores crowd near the click rate is seen at full resolution (on linear bins of [0, 1] its whole
distribution falls in two or three bins). On scores uniform on [0, 1], F is the identity and
this is the plain histogram KL. The default, ``soft_histogram``, bins u with a Gaussian kernel
(bandwidth half a bin, normalised per score: each score spreads unit mass over the nearby bins,
about 80% in its own, so the histogram is differentiable in the score). ``gaussian_moments`` is
the cheap alternative: KL between the Gaussian with the generated quantiles' mean and variance
and the uniform law's (1/2, 1/12); it cannot see shape beyond two moments.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

_PROB_FLOOR = 1e-4
"""Added to every bin before KL: an empty real bin costs a large but finite penalty."""
_VAR_FLOOR = 1e-4
"""Variance floor of the Gaussian-moment KL (a batch of identical scores has variance 0)."""


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean BCE-with-logits over ``mask`` (logits, labels, mask [B, L]) -> scalar; 0 if mask is empty.

    ``torch.where`` (not a product with the mask) keeps non-finite values at masked positions
    out of the sum.
    """
    per_item = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none")
    total = torch.where(mask, per_item, torch.zeros_like(per_item)).sum()
    return total / mask.sum().clamp_min(1)


def adversarial_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_adv = -BCE: minimised over phi, it seeks scores the reranker cannot denoise."""
    return -masked_bce(logits, labels, mask)


def soft_histogram(scores: torch.Tensor, mask: torch.Tensor, bins: int) -> torch.Tensor:
    """Soft counts [bins] of scores [B, L] in [0, 1] at ``mask``; differentiable in the scores.

    Bin k is centred at (k + 0.5) / bins; each score's unit mass is shared by a softmax over
    -(score - centre)^2 / (2 h^2) with h half a bin width: wide enough for a useful gradient
    between centres, narrow enough to keep the histogram's resolution near one bin.
    """
    centres = (torch.arange(bins, device=scores.device, dtype=torch.float32) + 0.5) / bins
    bandwidth = 0.5 / bins
    x = scores.float().unsqueeze(-1)  # [B, L, 1]
    weights = (-(x - centres).square() / (2 * bandwidth**2)).softmax(dim=-1)  # [B, L, bins]
    # Masking by multiplication, not boolean indexing: indexing would force a host sync.
    return (weights * mask.unsqueeze(-1)).sum(dim=(0, 1))


def _normalise(counts: torch.Tensor) -> torch.Tensor:
    """Counts [bins] -> probabilities with a floor (applied after normalising, so that the
    smoothing does not depend on how many scores were counted)."""
    smoothed = counts / counts.sum().clamp_min(1e-12) + _PROB_FLOOR
    return smoothed / smoothed.sum()


def soft_histogram_kl(quantiles: torch.Tensor, mask: torch.Tensor, bins: int) -> torch.Tensor:
    """KL(p_generated || uniform) [scalar] of the generated quantiles [B, L] at ``mask``, on
    ``bins`` soft bins of [0, 1]; 0 if ``mask`` is empty. The uniform side is binned with the
    same kernel (its edge bins lose a little mass to the kernel too), so the comparison is like
    for like and exactly uniform quantiles cost ~0."""
    counts = soft_histogram(quantiles, mask, bins)
    p_gen, p_real = _normalise(counts), _normalise(_uniform_soft_counts(bins, quantiles.device))
    kl = (p_gen * (p_gen.log() - p_real.log())).sum()
    return torch.where(mask.any(), kl, torch.zeros_like(kl))


def _uniform_soft_counts(bins: int, device: torch.device, per_bin: int = 16) -> torch.Tensor:
    """The soft histogram of an even grid of quantiles (the uniform law seen through the kernel)."""
    grid = (torch.arange(bins * per_bin, device=device, dtype=torch.float32) + 0.5) / (bins * per_bin)
    return soft_histogram(grid.unsqueeze(0), torch.ones_like(grid, dtype=torch.bool).unsqueeze(0), bins)


def gaussian_moment_kl(quantiles: torch.Tensor, mask: torch.Tensor, bins: int) -> torch.Tensor:
    """KL(N(mu_g, var_g) || N(1/2, 1/12)) [scalar] of the generated quantiles at ``mask`` (the
    uniform law's moments); 0 if mask is empty. ``bins`` is unused (one signature for all)."""
    n = mask.sum().clamp_min(1)
    mu_g = torch.where(mask, quantiles.float(), 0.0).sum() / n
    var_g = (torch.where(mask, quantiles.float() - mu_g, 0.0).square().sum() / n).clamp_min(_VAR_FLOOR)
    var_r = 1.0 / 12.0
    kl = 0.5 * (math.log(var_r) - torch.log(var_g) + (var_g + (mu_g - 0.5).square()) / var_r - 1.0)
    return torch.where(mask.any(), kl, torch.zeros_like(kl))


LxEstimator = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]

LX_ESTIMATORS: dict[str, LxEstimator] = {
    "soft_histogram": soft_histogram_kl,
    "gaussian_moments": gaussian_moment_kl,
}
"""L_x estimators by ``dnr.lx_estimator``: (generated quantiles [B, L], mask [B, L], bins) -> scalar."""


# ---- DeGRe (dnr.models.degre): the evaluator's cumulative regression and the distillation ----


def cumulative_regression(increments: torch.Tensor, utility: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over valid prefixes of (V_t - Y_t)^2 / t: V = cumsum of the predicted increments
    [B, T], Y [B, T] the logged cumulative utility of the same prefixes, ``valid`` [B, T] the
    entries of the list (a prefix of each row). 0 if nothing is valid.

    Every prefix is a regression target, so an early item's increment is pulled by every later
    prefix's error: the list-level utility is fitted, not only the per-item click. The click
    count of t items has a variance that grows like t, so each squared error is divided by t (a
    Gaussian likelihood with variance proportional to t); unweighted, the 50-item prefixes'
    errors dominate the gradient and, after clipping, leave the items' own signal nothing.
    """
    zero = torch.zeros_like(utility, dtype=torch.float32)
    v = torch.where(valid, increments.float(), zero).cumsum(dim=1)
    length = torch.arange(1, utility.shape[1] + 1, device=utility.device, dtype=torch.float32)
    per_prefix = (v - utility.float()).square() / length
    return torch.where(valid, per_prefix, zero).sum() / valid.sum().clamp_min(1)


def soft_target_kl(logits: torch.Tensor, targets: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Mean over steps with a target of KL(target || softmax(logits over ``allowed``)).

    logits, targets, allowed: [B, K, L]; a step's target sums to 1 over its allowed candidates,
    or is all zero (no target: the step is skipped). With one-hot targets this is the
    cross-entropy of the target item. 0 if no step has a target.
    """
    log_p = logits.float().masked_fill(~allowed, -1e9).log_softmax(dim=-1)
    per_item = torch.where(allowed & (targets > 0), torch.special.xlogy(targets, targets) - targets * log_p, 0.0)
    has_target = targets.sum(dim=-1) > 0  # [B, K]
    return per_item.sum() / has_target.sum().clamp_min(1)
