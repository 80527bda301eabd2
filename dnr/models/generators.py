"""Noise generators: synthesise retriever scores from the labels z [B, L].

All generators share one call signature, ``generator(labels, context) -> u'`` [B, L] in [0, 1],
and all are anchored at the labels as in the paper: u' = (1 - lambda_c) * z + lambda_c * eps,
so u' lies in [(1 - lambda_c) z, (1 - lambda_c) z + lambda_c]. The training step swaps them
without knowing which one it holds:

* ``gaussian`` (DNR-G) and ``beta`` (DNR-B): parameter-free heuristics, eps drawn from a fixed
  law, used until the switch (``lambda_e``).
* ``mlp``: the model-based generator f_phi, eps = sigmoid(MLP(z, item, user, noise)), trained
  adversarially after the switch. Anchoring bounds what the adversary can do: it chooses where
  within its label's band each candidate's score goes, never a positive's score at the bottom of
  the negatives' range (an unanchored adversary can, and L_z then teaches that a very low score
  means a click).

u' is a quantile: :func:`synthesize_scores` maps it to a score with the inverse CDF of the real
scores (``dnr.noise_scale = quantile``, :mod:`dnr.models.score_quantiles`), or uses it as the
score as the paper does (``uniform``).

Generators exist only in training; only the reranker is served.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import nn

from dnr.config import DNRConfig
from dnr.data.batch import RerankBatch
from dnr.models.prm import RerankerContext


def _mix(labels: torch.Tensor, eps: torch.Tensor, lambda_c: float) -> torch.Tensor:
    return ((1.0 - lambda_c) * labels + lambda_c * eps).clamp(0.0, 1.0)


Law = Callable[[torch.Tensor], torch.Tensor]
"""A noise law: ``sample(like)`` -> eps of ``like``'s shape, dtype and device, in [0, 1]."""


def gaussian_law(mu: float, sigma: float) -> Law:
    """DNR-G: eps ~ N(mu, sigma) clipped to [0, 1]."""
    return lambda like: (mu + sigma * torch.randn_like(like)).clamp(0.0, 1.0)


def beta_law(alpha: float, beta: float) -> Law:
    """DNR-B: eps ~ Beta(alpha, beta); the default 0.5/0.5 puts most noise near 0 and 1.

    Beta(1/2, 1/2) is the arcsine law, whose CDF (2/pi) arcsin(sqrt(x)) inverts in closed form:
    eps = sin(pi U / 2)^2 with U uniform. The default draws that way, the same distribution as
    ``torch.distributions.Beta`` at a twentieth of its cost on CPU (two gamma draws per value
    there); other parameters take the general sampler.
    """
    if alpha == beta == 0.5:
        return lambda like: torch.sin(torch.rand_like(like) * (math.pi / 2)).square()

    def sample(like: torch.Tensor) -> torch.Tensor:
        concentration = like.new_tensor([alpha, beta])
        return torch.distributions.Beta(concentration[0], concentration[1]).sample(like.shape)

    return sample


class HeuristicNoise(nn.Module):
    """A parameter-free first-stage generator: u' = (1 - lambda_c) z + lambda_c eps with eps drawn
    from ``law`` (gaussian or beta); ignores the context. ``lambda_c`` may be changed between
    steps (``dnr.match_auc``)."""

    def __init__(self, lambda_c: float, law: Law):
        super().__init__()
        self.lambda_c, self.sample = lambda_c, law
        self._auc_table: Optional[torch.Tensor] = None

    def forward(self, labels: torch.Tensor, context: Optional[RerankerContext] = None) -> torch.Tensor:
        """labels [B, L] -> u' [B, L] in [0, 1]."""
        return _mix(labels, self.sample(labels), self.lambda_c)

    def lambda_c_for_auc(self, auc: torch.Tensor) -> torch.Tensor:
        """The lambda_c at which this law's synthetic scores rank the labels with AUC ``auc``
        (a scalar tensor): P(u'(z=1) > u'(z=0)) = P(eps2 - eps1 < (1 - lambda_c) / lambda_c),
        decreasing from 1 at lambda_c = 0 to 1/2 at lambda_c = 1; tabulated once on a fixed
        sample of the law, then interpolated (no host sync)."""
        table = self._table(auc.device)
        lambdas = torch.linspace(0.0, 1.0, table.numel(), device=auc.device)
        # the table decreases in lambda_c: search its reverse
        reverse = table.flip(0).contiguous()
        target = auc.float().clamp(0.5, 1.0).reshape(1)
        k = torch.searchsorted(reverse, target).clamp(1, reverse.numel() - 1)
        lo, hi = reverse[k - 1], reverse[k]
        w = ((target - lo) / (hi - lo).clamp_min(1e-9)).clamp(0.0, 1.0)
        lam = lambdas.flip(0)
        return (lam[k - 1] + w * (lam[k] - lam[k - 1])).reshape(())

    def _table(self, device: torch.device, points: int = 201, draws: int = 4096) -> torch.Tensor:
        if self._auc_table is None or self._auc_table.device != device:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                first = self.sample(torch.empty(draws)).double()
                second = self.sample(torch.empty(draws)).double().sort().values
            lambdas = torch.linspace(0.0, 1.0, points, dtype=torch.float64)
            gap = (1.0 - lambdas) / lambdas.clamp_min(1e-12)  # [points]
            bound = first.unsqueeze(0) + gap.unsqueeze(1)  # [points, draws]
            below = torch.searchsorted(second, bound.contiguous(), right=False).double()
            ties = torch.searchsorted(second, bound.contiguous(), right=True).double() - below
            table = ((below + 0.5 * ties) / draws).mean(dim=1)
            table[0] = 1.0
            self._auc_table = table.float().to(device)
        return self._auc_table


class MLPNoiseGenerator(nn.Module):
    """f_phi: eps = sigmoid(logit(eps0) + MLP(z, item, user, noise, logit(eps0))) in (0, 1) per
    candidate (a 2-layer MLP), and u' = (1 - lambda_c) * z + lambda_c * eps.

    eps0 is a draw of the first stage's heuristic law (``base``) and the MLP's last layer starts
    at zero, so at the switch the learned generator is the heuristic exactly and learns
    adversarial corrections from there. (Started from a fresh MLP instead, eps is ~1/2 for every
    candidate: u' then separates positives from negatives perfectly, the denoising task becomes
    trivial the moment the generator takes over, and the reranker's hold-out stalled there.)

    The context is detached here (not only by the caller): phi must never push gradients into
    the reranker's embeddings. Randomness enters as eps0 and a standard-normal input
    (reparameterisation), so the output is differentiable in phi.
    """

    def __init__(self, lambda_c: float, d_model: int, hidden: int, noise_dim: int, base: HeuristicNoise):
        super().__init__()
        self.lambda_c, self.noise_dim, self.base = lambda_c, noise_dim, base
        inputs = 2 + 2 * d_model + noise_dim  # label, item embedding, user vector, noise, logit(eps0)
        self.net = nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, labels: torch.Tensor, context: Optional[RerankerContext] = None) -> torch.Tensor:
        """labels [B, L], context (items [B, L, d], user [B, d]) -> u' [B, L] within
        [(1 - lambda_c) z, (1 - lambda_c) z + lambda_c]."""
        if context is None:
            raise ValueError("the mlp generator is conditioned on the reranker context; got None")
        items = context.items.detach()
        base = torch.logit(self.base.sample(labels.to(items.dtype)), eps=_EPS0_CLAMP)
        user = context.user.detach().unsqueeze(1).expand_as(items)
        noise = torch.randn(*labels.shape, self.noise_dim, device=labels.device, dtype=items.dtype)
        inputs = torch.cat([labels.unsqueeze(-1).to(items.dtype), items, user, noise, base.unsqueeze(-1)], dim=-1)
        eps = torch.sigmoid(base + self.net(inputs).squeeze(-1))
        return (1.0 - self.lambda_c) * labels.to(eps.dtype) + self.lambda_c * eps


_EPS0_CLAMP = 1e-4
"""eps0 is clamped to [1e-4, 1 - 1e-4] before its logit (the heuristics reach 0 and 1)."""


def _mlp(cfg: DNRConfig, d_model: int) -> MLPNoiseGenerator:
    base = GENERATORS[cfg.heuristic](cfg, d_model)
    return MLPNoiseGenerator(cfg.lambda_c, d_model, cfg.generator_hidden, cfg.noise_dim, base)


GENERATORS: dict[str, Callable[[DNRConfig, int], nn.Module]] = {
    "gaussian": lambda cfg, d_model: HeuristicNoise(cfg.lambda_c, gaussian_law(cfg.gaussian_mu, cfg.gaussian_sigma)),
    "beta": lambda cfg, d_model: HeuristicNoise(cfg.lambda_c, beta_law(cfg.beta_alpha, cfg.beta_beta)),
    "mlp": _mlp,
}
"""Generator factories by name: (dnr config, reranker d_model) -> module."""


def build_generator(name: str, dnr_cfg: DNRConfig, d_model: int) -> nn.Module:
    """The generator ``name`` (a key of ``GENERATORS``): ``dnr_cfg.heuristic`` or ``dnr_cfg.generator``."""
    return GENERATORS[name](dnr_cfg, d_model)


def synthesize_scores(
    generator: nn.Module, batch: RerankBatch, context: Optional[RerankerContext] = None,
    to_score: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> torch.Tensor:
    """Synthetic scores [B, L]: generated where a label exists, the real score elsewhere.

    ``to_score`` maps the generator's quantiles u' to scores (the real scores' inverse CDF,
    :meth:`dnr.models.score_quantiles.ScoreQuantiles.icdf`); None uses u' as the score.
    Unlabelled candidates keep their real score because the generator is conditioned on a
    label they do not have; padding keeps 0. The synthetic list stays a plausible list.
    """
    generated = generator(batch.labels, context)
    if to_score is not None:
        generated = to_score(generated)
    return torch.where(batch.label_mask, generated.to(batch.scores.dtype), batch.scores)
