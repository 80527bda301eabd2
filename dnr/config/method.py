"""The ``dnr`` section of the config tree: DNR's objectives and noise generators, and the names
of their variants (a module of its own only to keep :mod:`dnr.config.sections` small; import it
from :mod:`dnr.config`)."""

from __future__ import annotations

from dataclasses import dataclass

from dnr.config.sections import _check

HEURISTIC_GENERATORS = ("gaussian", "beta")
"""Parameter-free noise of the first stage (keys of ``dnr.models.generators.GENERATORS``)."""
MODEL_GENERATORS = ("mlp",)
"""Learned noise generators of the second stage (keys of ``dnr.models.generators.GENERATORS``)."""
NOISE_SCALES = ("quantile", "uniform")
"""Where generated noise lives: the real scores' quantile scale, or [0, 1] as in the paper."""
LX_ESTIMATORS = ("soft_histogram", "gaussian_moments")
"""Keys of ``dnr.losses.LX_ESTIMATORS``."""


@dataclass(frozen=True)
class DNRConfig:
    """The DNR objectives and noise generators: a training recipe on top of any score mode."""

    enabled: bool = True
    """Train with the DNR objectives (L_theta = L_direct + lambda_m * L_z, then the adversarial
    generator); false trains the score mode with plain BCE (the naive baselines)."""
    heuristic: str = "beta"
    """First-stage noise: gaussian (DNR-G) or beta (DNR-B)."""
    generator: str = "mlp"
    """Model-based generator f_phi of the second stage: eps = MLP(z, item, user, noise) in (0, 1),
    anchored as (1 - lambda_c) * z + lambda_c * eps like the heuristics."""
    use_generator: bool = True
    """False is the heuristic-only ablation: the model-based generator is never switched on."""
    use_adv: bool = True
    """Train f_phi with L_adv; False is the ablation L_phi = lambda_x * L_x."""
    use_lx: bool = True
    """Train f_phi with L_x; False is the ablation L_phi = L_adv."""
    lambda_m: float = 0.5
    """Weight of L_z (denoising on generated scores) in L_theta = L_direct + lambda_m * L_z
    (the paper's range: 0.4-0.6). 0: the copy is not scored and the step is the naive one."""
    lambda_x: float = 1.0
    """Weight of L_x (score-distribution match) in L_phi = L_adv + lambda_x * L_x."""
    lambda_c: float = 0.4
    """Noise ratio in u' = (1 - lambda_c) * z + lambda_c * eps, for the heuristics and the learned
    generator alike (the paper's range: 0.3-0.5; below 0.5, u' > 0.5 iff z = 1)."""
    match_auc: bool = False
    """Choose lambda_c every step so that the heuristic's synthetic scores rank the labels as well
    as the real scores do (the running per-request AUC of the real scores, kept with the score
    sketch): the denoising task as hard as the real one, whatever the retriever. ``lambda_c`` is
    then used only before the first labelled request; the learned generator is anchored with the
    same lambda_c."""
    noise_scale: str = "quantile"
    """quantile: u' is a quantile of the real scores and x' = icdf(u') lies on the retriever's
    own scale (dnr.models.score_quantiles); uniform: x' = u' on [0, 1], the paper's form (the
    two agree when real scores are uniform on [0, 1])."""
    lambda_e_epochs: float = 1.0
    """The model-based generator takes over after this many epochs of the model's first run
    (fixed as a lifetime step at the cold start, so warm starts keep their phase)."""
    lambda_e: int = -1
    """The switch as a lifetime global step; when >= 0 it replaces ``lambda_e_epochs`` (-1: unset)."""
    gaussian_mu: float = 0.5
    """Mean of the DNR-G noise eps ~ N(mu, sigma), clipped to [0, 1]."""
    gaussian_sigma: float = 0.25
    """Standard deviation of the DNR-G noise."""
    beta_alpha: float = 0.5
    """alpha of the DNR-B noise eps ~ Beta(alpha, beta)."""
    beta_beta: float = 0.5
    """beta of the DNR-B noise."""
    generator_hidden: int = 128
    """Hidden width of the MLP generator."""
    noise_dim: int = 16
    """Size of the standard-normal input of the MLP generator (reparameterisation)."""
    lx_estimator: str = "soft_histogram"
    """How L_x is estimated, on the real scores' quantile scale: soft_histogram (KL of kernel
    histograms against the uniform law) or gaussian_moments (mean and variance only)."""
    hist_bins: int = 32
    """Bins on [0, 1] (quantile scale) of the soft histograms of L_x."""
    hist_decay: float = 0.99
    """EMA decay, per training step, of the running sketch of the real scores."""
    synthetic_fraction: float = 1.0
    """Fraction of each batch's requests (drawn at random every step) given a synthetic copy:
    L_z and the generator half-step see only those. 1.0 is the method as published; less makes
    a step cheaper (the encoder runs over B + K lists instead of 2B), see bench/README.md."""

    def __post_init__(self):
        _check(self.heuristic in HEURISTIC_GENERATORS, "dnr.heuristic", self.heuristic,
               f"must be one of {HEURISTIC_GENERATORS}")
        _check(self.generator in MODEL_GENERATORS, "dnr.generator", self.generator,
               f"must be one of {MODEL_GENERATORS}")
        _check(self.noise_scale in NOISE_SCALES, "dnr.noise_scale", self.noise_scale,
               f"must be one of {NOISE_SCALES}")
        _check(not self.use_generator or self.use_adv or self.use_lx, "dnr.use_generator",
               self.use_generator, "needs dnr.use_adv or dnr.use_lx, else f_phi has no objective")
        _check(self.lambda_m >= 0.0, "dnr.lambda_m", self.lambda_m, "must be >= 0")
        _check(self.lambda_x >= 0.0, "dnr.lambda_x", self.lambda_x, "must be >= 0")
        _check(0.0 <= self.lambda_c <= 1.0, "dnr.lambda_c", self.lambda_c, "must be in [0, 1]")
        _check(self.lambda_e_epochs >= 0.0, "dnr.lambda_e_epochs", self.lambda_e_epochs, "must be >= 0")
        _check(self.lambda_e >= -1, "dnr.lambda_e", self.lambda_e,
               "must be >= 0, or -1 (unset: lambda_e_epochs decides)")
        _check(self.gaussian_sigma > 0.0, "dnr.gaussian_sigma", self.gaussian_sigma, "must be > 0")
        _check(self.beta_alpha > 0.0, "dnr.beta_alpha", self.beta_alpha, "must be > 0")
        _check(self.beta_beta > 0.0, "dnr.beta_beta", self.beta_beta, "must be > 0")
        _check(self.generator_hidden >= 1, "dnr.generator_hidden", self.generator_hidden, "must be >= 1")
        _check(self.noise_dim >= 1, "dnr.noise_dim", self.noise_dim, "must be >= 1")
        _check(self.lx_estimator in LX_ESTIMATORS, "dnr.lx_estimator", self.lx_estimator,
               f"must be one of {LX_ESTIMATORS}")
        _check(self.hist_bins >= 2, "dnr.hist_bins", self.hist_bins, "must be >= 2")
        _check(0.0 <= self.hist_decay < 1.0, "dnr.hist_decay", self.hist_decay, "must be in [0, 1)")
        _check(0.0 < self.synthetic_fraction <= 1.0, "dnr.synthetic_fraction", self.synthetic_fraction,
               "must be in (0, 1]")

    def switch_step(self, steps_per_epoch: int) -> int:
        """The lifetime global step of the switch for a model whose first run has
        ``steps_per_epoch`` steps per epoch: ``lambda_e`` if set, else ``lambda_e_epochs`` epochs."""
        if self.lambda_e >= 0:
            return self.lambda_e
        return round(self.lambda_e_epochs * steps_per_epoch)
