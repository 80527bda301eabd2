"""The sections of the typed config tree: one frozen dataclass per section, and the names of
the variants they accept (``SCORE_MODES``, ``RERANKER_FAMILIES``, ...).

Each field has a one-line docstring (the comment under it); ``__post_init__`` validates and
names the bad field and value. :class:`dnr.config.JobConfig` assembles the sections; import
them from :mod:`dnr.config`.
"""

from __future__ import annotations

import re
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
    object_store_budget_mb: int = 1024
    """Object-store memory the training stream may hold ahead of the workers, in MiB (Ray Data's
    ``resource_limits``): the read-ahead is capped by this, not by the window. 0: Ray's default
    (a share of the cluster's object store)."""

    def __post_init__(self):
        _check(self.max_list_len >= 1, "data.max_list_len", self.max_list_len, "must be >= 1")
        _check(self.object_store_budget_mb >= 0, "data.object_store_budget_mb",
               self.object_store_budget_mb, "must be >= 0 (0: Ray's default)")
        _check(self.history_len >= 1, "data.history_len", self.history_len, "must be >= 1")
        _check(self.num_buckets >= 2, "data.num_buckets", self.num_buckets, "must be >= 2")
        _check(self.batch_size >= 1, "data.batch_size", self.batch_size, "must be >= 1")


RERANKER_FAMILIES = ("prm", "degre")
"""Keys of ``dnr.models.factory.RERANKERS``; a unit test keeps the two in step."""
SCORE_MODES = ("none", "concat", "add", "weight", "denoise")
"""Keys of ``dnr.models.score_modes.SCORE_MODES``."""

@dataclass(frozen=True)
class ModelConfig:
    """The reranker q_theta(z | x, u). Its rank embedding has ``DataConfig.max_list_len`` rows."""

    family: str = "prm"
    """Architecture: prm (transformer encoder over the candidate list) or degre (the DeGRe generator)."""
    score_mode: str = "denoise"
    """How retriever scores are used (the architecture): none | concat | add | weight | denoise
    (concat + add: the score is an input and its logit, scaled, is added to the output). Whether
    the DNR objectives train it is ``dnr.enabled``."""
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
    rank_embedding: bool = True
    """A learned embedding of each candidate's rank in its list (prm): the retriever's order for
    real lists, the order of the synthetic scores for DNR's synthetic copy."""

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
class OptimConfig:
    """AdamW for the dense parameters of the reranker theta and the generator phi; the item
    tables have their own optimizer (``embedding_optimizer``), fused into the backward pass
    when the tables are sharded, so a step updates only the rows its batch touched."""

    lr: float = 1e-3
    """Learning rate of the reranker."""
    generator_lr: float = 1e-3
    """Learning rate of the model-based generator."""
    weight_decay: float = 0.0
    """AdamW weight decay of both models; 0 because decay shrinks the rarely seen embedding rows."""
    grad_clip: float = 1.0
    """Max global gradient norm of each update's dense parameters; 0 disables clipping."""
    embedding_optimizer: str = "rowwise_adagrad"
    """Optimizer of the item tables: rowwise_adagrad (one accumulator per row: CPU and GPU, the
    default), adagrad, sgd, or adam (GPU only: TorchRec's CPU kernels fuse no Adam)."""
    embedding_lr: float = 0.2
    """Learning rate of the item tables (Adagrad normalises each row's step, so it is larger
    than the dense AdamW's). 0.2: the best of 0.01-0.5 with row-wise Adagrad on the synthetic
    validation day (bench/README.md, "Quality")."""
    warmup_steps: int = 0
    """Steps of each run over which every learning rate rises linearly from lr/warmup_steps to lr."""
    lr_decay: str = "none"
    """After the warm-up, over the rest of the run's steps: none, linear or cosine, down to
    ``min_lr_ratio`` x lr (dnr.training.schedule)."""
    min_lr_ratio: float = 0.1
    """Learning rate at the end of the run's decay, as a fraction of the configured one."""

    def __post_init__(self):
        _check(self.embedding_optimizer in EMBEDDING_OPTIMIZERS, "optim.embedding_optimizer",
               self.embedding_optimizer, f"must be one of {', '.join(EMBEDDING_OPTIMIZERS)}")
        _check(self.embedding_lr > 0.0, "optim.embedding_lr", self.embedding_lr, "must be > 0")
        _check(self.lr > 0.0, "optim.lr", self.lr, "must be > 0")
        _check(self.generator_lr > 0.0, "optim.generator_lr", self.generator_lr, "must be > 0")
        _check(self.weight_decay >= 0.0, "optim.weight_decay", self.weight_decay, "must be >= 0")
        _check(self.grad_clip >= 0.0, "optim.grad_clip", self.grad_clip, "must be >= 0")
        _check(self.warmup_steps >= 0, "optim.warmup_steps", self.warmup_steps, "must be >= 0")
        _check(self.lr_decay in LR_DECAYS, "optim.lr_decay", self.lr_decay,
               f"must be one of {', '.join(LR_DECAYS)}")
        _check(0.0 <= self.min_lr_ratio <= 1.0, "optim.min_lr_ratio", self.min_lr_ratio, "must be in [0, 1]")


LR_DECAYS = ("none", "linear", "cosine")
"""Shapes of the learning rate after the warm-up (dnr.training.schedule)."""


EMBEDDING_OPTIMIZERS: dict[str, bool] = {"rowwise_adagrad": True, "adagrad": True, "sgd": True,
                                         "adam": False}
"""Item-table optimizers -> whether TorchRec fuses it on CPU (dnr.training.sharding maps each
to its fused kernel and to the plain torch optimizer of an unsharded table)."""
EMBEDDING_SHARDINGS = ("row_wise", "auto")
"""row_wise: each worker holds a contiguous slice of every table's rows; auto: the TorchRec
planner chooses table-wise, row-wise or column-wise per table."""

_MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_RESOURCE = re.compile(r"(?!(?:CPU|GPU|memory|object_store_memory)$)[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class TrainConfig:
    """The Ray Train run: workers, cadence, fault tolerance."""

    epochs: int = 1
    """Passes over the day's window per daily run."""
    num_workers: int = 2
    """Ray Train workers (DDP ranks)."""
    use_gpu: bool = False
    """NCCL + bf16 autocast on GPU; gloo on CPU."""
    cpus_per_worker: float = 1.0
    """CPUs Ray reserves for each Train worker."""
    seed: int = 0
    """Seed of model initialisation, noise and shuffling (offset by rank where needed)."""
    log_every_steps: int = 10
    """Steps of this run between two metric writes (the run's step, as every cadence of a run;
    TensorBoard's x-axis is the model's lifetime step: :mod:`dnr.checkpoints.progress`)."""
    checkpoint_every_steps: int = 0
    """Steps of this run between two checkpoints; 0 = checkpoint only at the end of each epoch."""
    max_failures: int = 2
    """Ray Train FailureConfig.max_failures; -1 = retry without limit."""
    bf16: bool = True
    """Autocast dtype bf16 on GPU (ignored on CPU)."""
    max_steps: int = 0
    """Cap on the steps of one run; 0 = no limit (smoke runs set it)."""
    model_name: str = "dnr"
    """Registry model line; run names are <model_name>-<ds> (used in paths, so [a-z0-9_-])."""
    worker_resource: str = ""
    """Custom Ray resource each Train worker needs one unit of, to pin training to a node group
    (e.g. the GPU group started with --resources='{"trainer": 4}'); empty = no constraint."""
    max_window_days: int = 14
    """Longest window a daily run trains on, in days (partitions): the newest ones are kept and
    the run says which it skipped. Bounds a cold start on a long history and the days that pile
    up after production while candidates are rejected. 0: no limit."""
    lease_ttl_s: float = 1800.0
    """Expiry of the run's lease on the lake (renewed every third of it while the run lives)."""
    embedding_sharding: str = "row_wise"
    """How the item tables are split across the workers: row_wise (each worker holds 1/N of the
    rows) or auto (the TorchRec sharding planner's choice)."""

    def __post_init__(self):
        _check(self.epochs >= 1, "train.epochs", self.epochs, "must be >= 1")
        _check(self.num_workers >= 1, "train.num_workers", self.num_workers, "must be >= 1")
        _check(self.cpus_per_worker > 0, "train.cpus_per_worker", self.cpus_per_worker, "must be > 0")
        _check(self.log_every_steps >= 1, "train.log_every_steps", self.log_every_steps, "must be >= 1")
        _check(self.checkpoint_every_steps >= 0, "train.checkpoint_every_steps",
               self.checkpoint_every_steps, "must be >= 0 (0 = end of each epoch)")
        _check(self.max_failures >= -1, "train.max_failures", self.max_failures,
               "must be >= -1 (-1 = unlimited)")
        _check(self.worker_resource == "" or _RESOURCE.fullmatch(self.worker_resource) is not None,
               "train.worker_resource", self.worker_resource,
               "must be empty or a Ray custom resource name ([A-Za-z0-9_-], not CPU/GPU/memory)")
        _check(self.max_window_days >= 0, "train.max_window_days", self.max_window_days,
               "must be >= 0 (0: no limit)")
        _check(self.lease_ttl_s >= 10.0, "train.lease_ttl_s", self.lease_ttl_s,
               "must be >= 10 seconds (far above any clock skew between hosts)")
        _check(self.embedding_sharding in EMBEDDING_SHARDINGS, "train.embedding_sharding",
               self.embedding_sharding, f"must be one of {', '.join(EMBEDDING_SHARDINGS)}")
        _check(self.max_steps >= 0, "train.max_steps", self.max_steps, "must be >= 0 (0 = no limit)")
        _check(isinstance(self.model_name, str) and _MODEL_NAME.fullmatch(self.model_name) is not None,
               "train.model_name", self.model_name,
               "must match [a-z0-9][a-z0-9_-]* (it is used in paths and run names)")


_METRIC = re.compile(r"(?:(?:H|N|M|F1)@[1-9][0-9]*|AUC)")
"""Metric names the gate may name: the per-request metrics of dnr.metrics."""


@dataclass(frozen=True)
class GateConfig:
    """Offline replay evaluation and the promotion gate (dnr.evaluation.gate).

    A candidate is promoted only when every check passes: the primary metric is not worse than
    the baseline's beyond ``tolerance`` with ``confidence`` (a non-inferiority test on the
    paired bootstrap interval of the per-request difference), no guardrail metric's mean
    difference is below ``-guardrail_tolerance``, the candidate is not worse than the retriever
    order (the floor), and the sanity checks hold (no NaN score, a non-degenerate score
    distribution, at least ``min_requests`` requests with a positive evaluated).
    """

    enabled: bool = True
    """The daily job runs the replay evaluation of its candidate on the held-out day."""
    auto_promote: bool = True
    """The daily job promotes a candidate that passes the gate (and marks a failing one rejected)."""
    primary_metric: str = "N@6"
    """Metric of the non-inferiority test (H@K, N@K, M@K, F1@K or AUC)."""
    tolerance: float = 0.005
    """Promote only if the lower end of the interval of (candidate - baseline) >= -tolerance."""
    guardrail_metrics: str = "AUC,H@6"
    """Comma-separated metrics whose mean difference must stay >= -guardrail_tolerance."""
    guardrail_tolerance: float = 0.01
    """Largest regression allowed on a guardrail metric."""
    retriever_tolerance: float = 0.0
    """The candidate's primary metric must be >= the retriever order's minus this."""
    min_requests: int = 200
    """Requests with a positive (the ones the metrics average over) needed for a decision."""
    min_score_std: float = 1e-4
    """Smallest standard deviation of the candidate's logits over valid candidates."""
    max_tied_fraction: float = 0.5
    """Largest fraction of requests whose candidate scores are all equal (no ranking)."""
    confidence: float = 0.95
    """Two-sided level of the bootstrap intervals."""
    bootstrap_replicates: int = 1000
    """Poisson-bootstrap replicates (additive, so they are computed inside the Ray Data pass)."""
    batch_size: int = 512
    """Requests per scoring batch in the replay evaluation."""
    num_scorers: int = 2
    """Scoring actors of the replay evaluation (one GPU each when train.use_gpu)."""

    def __post_init__(self):
        for name in (self.primary_metric, *self.guardrails):
            _check(_METRIC.fullmatch(name) is not None, "gate.primary_metric/guardrail_metrics", name,
                   "must be H@K, N@K, M@K, F1@K or AUC")
        _check(self.tolerance >= 0.0, "gate.tolerance", self.tolerance, "must be >= 0")
        _check(self.guardrail_tolerance >= 0.0, "gate.guardrail_tolerance", self.guardrail_tolerance,
               "must be >= 0")
        _check(self.retriever_tolerance >= 0.0, "gate.retriever_tolerance", self.retriever_tolerance,
               "must be >= 0")
        _check(self.min_requests >= 1, "gate.min_requests", self.min_requests, "must be >= 1")
        _check(self.min_score_std >= 0.0, "gate.min_score_std", self.min_score_std, "must be >= 0")
        _check(0.0 <= self.max_tied_fraction <= 1.0, "gate.max_tied_fraction", self.max_tied_fraction,
               "must be in [0, 1]")
        _check(0.5 <= self.confidence < 1.0, "gate.confidence", self.confidence, "must be in [0.5, 1)")
        _check(self.bootstrap_replicates >= 100, "gate.bootstrap_replicates",
               self.bootstrap_replicates, "must be >= 100")
        _check(self.batch_size >= 1, "gate.batch_size", self.batch_size, "must be >= 1")
        _check(self.num_scorers >= 1, "gate.num_scorers", self.num_scorers, "must be >= 1")

    @property
    def guardrails(self) -> tuple[str, ...]:
        return tuple(m.strip() for m in self.guardrail_metrics.split(",") if m.strip())


@dataclass(frozen=True)
class DeGReConfig:
    """DeGRe (``model.family == 'degre'``): lookahead evaluator, beam-search mining, distillation.

    ``model.*`` sizes the served generator; the evaluator (training only) is sized here.
    """

    list_len: int = 6
    """K: positions the beam search mines and the generator decodes greedily."""
    beam_width: int = 4
    """Beams kept per request by the offline lookahead mining."""
    temperature: float = 0.05
    """Soft target of step t = softmax(value increment / temperature) over the remaining candidates."""
    dense: bool = True
    """False is the ablation without dense supervision: one-hot targets from the logged list, clicks first."""
    beam_weight: float = 0.5
    """Weight of the cross-entropy on the beam's own choice, added to the dense-target KL."""
    increment_weight: float = 1.0
    """Weight of the per-step BCE of each increment on its logged click, added to the cumulative regression."""
    evaluator_d_model: int = 64
    """Width of the evaluator's item embeddings and transformer."""
    evaluator_layers: int = 1
    """Transformer encoder layers of the evaluator over the candidate set."""
    evaluator_heads: int = 2
    """Attention heads of the evaluator's encoder; must divide degre.evaluator_d_model."""
    evaluator_lr: float = 1e-3
    """AdamW learning rate of the evaluator."""

    def __post_init__(self):
        _check(self.list_len >= 1, "degre.list_len", self.list_len, "must be >= 1")
        _check(self.beam_width >= 1, "degre.beam_width", self.beam_width, "must be >= 1")
        _check(self.temperature > 0.0, "degre.temperature", self.temperature, "must be > 0")
        _check(self.beam_weight >= 0.0, "degre.beam_weight", self.beam_weight, "must be >= 0")
        _check(self.increment_weight >= 0.0, "degre.increment_weight", self.increment_weight, "must be >= 0")
        _check(self.evaluator_d_model >= 1, "degre.evaluator_d_model", self.evaluator_d_model, "must be >= 1")
        _check(self.evaluator_layers >= 1, "degre.evaluator_layers", self.evaluator_layers, "must be >= 1")
        _check(self.evaluator_heads >= 1 and self.evaluator_d_model % self.evaluator_heads == 0,
               "degre.evaluator_heads", self.evaluator_heads,
               f"must be >= 1 and divide degre.evaluator_d_model={self.evaluator_d_model}")
        _check(self.evaluator_lr > 0.0, "degre.evaluator_lr", self.evaluator_lr, "must be > 0")
