"""One typed config tree. Frozen dataclasses; a YAML file and ``key=value`` overrides change it.

Each field has a one-line docstring (the comment under it); ``__post_init__`` validates and
names the bad field and value.
"""

from __future__ import annotations

from dataclasses import dataclass


def _check(cond: bool, field: str, value, why: str) -> None:
    if not cond:
        raise ValueError(f"config {field}={value!r}: {why}")


@dataclass(frozen=True)
class DataConfig:
    """How request-log rows become a ``RerankBatch``."""

    max_list_len: int = 50
    """Longest candidate list accepted; longer lists are quarantined (reason list_too_long)."""
    history_len: int = 50
    """History items kept per request (the most recent ones)."""
    num_buckets: int = 1 << 18
    """Hash buckets for item ids (bucket 0 is padding); shared by candidates and history."""
    hash_seed: int = 0
    """Seed of the item-id hash; changing it invalidates every trained embedding."""
    batch_size: int = 256
    """Requests per training batch (per worker)."""

    def __post_init__(self):
        _check(self.max_list_len >= 1, "data.max_list_len", self.max_list_len, "must be >= 1")
        _check(self.history_len >= 1, "data.history_len", self.history_len, "must be >= 1")
        _check(self.num_buckets >= 2, "data.num_buckets", self.num_buckets, "must be >= 2")
        _check(self.batch_size >= 1, "data.batch_size", self.batch_size, "must be >= 1")


RERANKER_FAMILIES = ("prm",)
"""Keys of ``dnr.models.factory.RERANKERS``; a unit test keeps the two in step."""
SCORE_MODES = ("none", "concat", "add", "weight", "denoise")
"""Keys of ``dnr.models.score_modes.SCORE_MODES``."""
HEURISTIC_GENERATORS = ("gaussian", "beta")
"""Parameter-free noise of the first stage (keys of ``dnr.models.generators.GENERATORS``)."""
MODEL_GENERATORS = ("mlp",)
"""Learned noise generators of the second stage (keys of ``dnr.models.generators.GENERATORS``)."""
LX_ESTIMATORS = ("soft_histogram", "gaussian_moments")
"""Keys of ``dnr.losses.LX_ESTIMATORS``."""


@dataclass(frozen=True)
class ModelConfig:
    """The reranker q_theta(z | x, u). Its rank embedding has ``DataConfig.max_list_len`` rows."""

    family: str = "prm"
    """Architecture: prm (transformer encoder over the candidate list)."""
    score_mode: str = "denoise"
    """How retriever scores are used: none | concat | add | weight | denoise (DNR)."""
    d_model: int = 128
    """Width of the item embeddings and of the transformer."""
    n_layers: int = 2
    """Transformer encoder layers over the candidate list."""
    n_heads: int = 4
    """Attention heads per layer; must divide d_model."""
    ff_dim: int = 256
    """Hidden width of each transformer feed-forward block."""
    dropout: float = 0.1
    """Dropout inside the encoder (inactive in eval mode)."""

    def __post_init__(self):
        _check(self.family in RERANKER_FAMILIES, "model.family", self.family,
               f"must be one of {RERANKER_FAMILIES}")
        _check(self.score_mode in SCORE_MODES, "model.score_mode", self.score_mode,
               f"must be one of {SCORE_MODES}")
        _check(self.d_model >= 1, "model.d_model", self.d_model, "must be >= 1")
        _check(self.n_layers >= 1, "model.n_layers", self.n_layers, "must be >= 1")
        _check(self.n_heads >= 1 and self.d_model % self.n_heads == 0, "model.n_heads",
               self.n_heads, f"must be >= 1 and divide model.d_model={self.d_model}")
        _check(self.ff_dim >= 1, "model.ff_dim", self.ff_dim, "must be >= 1")
        _check(0.0 <= self.dropout < 1.0, "model.dropout", self.dropout, "must be in [0, 1)")


@dataclass(frozen=True)
class DNRConfig:
    """The DNR objectives and noise generators (used when ``model.score_mode == 'denoise'``)."""

    heuristic: str = "beta"
    """First-stage noise: gaussian (DNR-G) or beta (DNR-B)."""
    generator: str = "mlp"
    """Model-based generator f_phi of the second stage."""
    use_generator: bool = True
    """False is the heuristic-only ablation: the model-based generator is never switched on."""
    use_adv: bool = True
    """Train f_phi with L_adv; False is the ablation L_phi = lambda_x * L_x."""
    use_lx: bool = True
    """Train f_phi with L_x; False is the ablation L_phi = L_adv."""
    lambda_m: float = 0.5
    """Weight of L_z (denoising on generated scores) in L_theta = L_direct + lambda_m * L_z."""
    lambda_x: float = 1.0
    """Weight of L_x (score-distribution match) in L_phi = L_adv + lambda_x * L_x."""
    lambda_c: float = 0.8
    """Heuristic noise ratio in x' = (1 - lambda_c) * z + lambda_c * eps (below 0.5, x' > 0.5 iff z = 1)."""
    lambda_e: int = 1000
    """Global step (over the model's lifetime) at which the model-based generator takes over."""
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
    """How L_x is estimated: soft_histogram (KL of kernel histograms) or gaussian_moments."""
    hist_bins: int = 32
    """Bins on [0, 1] of the soft histograms."""
    hist_decay: float = 0.99
    """EMA decay of the running real-score distribution (per training step)."""

    def __post_init__(self):
        _check(self.heuristic in HEURISTIC_GENERATORS, "dnr.heuristic", self.heuristic,
               f"must be one of {HEURISTIC_GENERATORS}")
        _check(self.generator in MODEL_GENERATORS, "dnr.generator", self.generator,
               f"must be one of {MODEL_GENERATORS}")
        _check(not self.use_generator or self.use_adv or self.use_lx, "dnr.use_generator",
               self.use_generator, "needs dnr.use_adv or dnr.use_lx, else f_phi has no objective")
        _check(self.lambda_m >= 0.0, "dnr.lambda_m", self.lambda_m, "must be >= 0")
        _check(self.lambda_x >= 0.0, "dnr.lambda_x", self.lambda_x, "must be >= 0")
        _check(0.0 <= self.lambda_c <= 1.0, "dnr.lambda_c", self.lambda_c, "must be in [0, 1]")
        _check(self.lambda_e >= 0, "dnr.lambda_e", self.lambda_e, "must be >= 0")
        _check(self.gaussian_sigma > 0.0, "dnr.gaussian_sigma", self.gaussian_sigma, "must be > 0")
        _check(self.beta_alpha > 0.0, "dnr.beta_alpha", self.beta_alpha, "must be > 0")
        _check(self.beta_beta > 0.0, "dnr.beta_beta", self.beta_beta, "must be > 0")
        _check(self.generator_hidden >= 1, "dnr.generator_hidden", self.generator_hidden, "must be >= 1")
        _check(self.noise_dim >= 1, "dnr.noise_dim", self.noise_dim, "must be >= 1")
        _check(self.lx_estimator in LX_ESTIMATORS, "dnr.lx_estimator", self.lx_estimator,
               f"must be one of {LX_ESTIMATORS}")
        _check(self.hist_bins >= 2, "dnr.hist_bins", self.hist_bins, "must be >= 2")
        _check(0.0 <= self.hist_decay < 1.0, "dnr.hist_decay", self.hist_decay, "must be in [0, 1)")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW for the reranker theta and the generator phi."""

    lr: float = 1e-3
    """Learning rate of the reranker."""
    generator_lr: float = 1e-3
    """Learning rate of the model-based generator."""
    weight_decay: float = 0.0
    """AdamW weight decay of both models; 0 because decay shrinks the rarely seen embedding rows."""
    grad_clip: float = 1.0
    """Max global gradient norm of each update; 0 disables clipping."""

    def __post_init__(self):
        _check(self.lr > 0.0, "optim.lr", self.lr, "must be > 0")
        _check(self.generator_lr > 0.0, "optim.generator_lr", self.generator_lr, "must be > 0")
        _check(self.weight_decay >= 0.0, "optim.weight_decay", self.weight_decay, "must be >= 0")
        _check(self.grad_clip >= 0.0, "optim.grad_clip", self.grad_clip, "must be >= 0")
