"""Scoring logged requests with several rankers at once, into additive replay state.

The replay evaluation ranks each logged request of a day with every *arm*:

==========  ==================================================================
arm         ranking scores
==========  ==================================================================
candidate   the model under evaluation (a registry version's checkpoint)
baseline    the model it must not be worse than (usually production); optional
retriever   the logged retriever scores: the order the request was served in
oracle      ``true_click_prob`` (synthetic data only): the best possible order
==========  ==================================================================

Everything a batch contributes is a sum (metric sums and counts, bootstrap sums, histograms),
packed into one float64 vector by :class:`ReplayState`. A :class:`ReplayScorer` actor loads
every checkpoint once, adds up the batches of its shard of the day, and returns one vector: the
driver receives one vector per actor, whatever the size of the day, and nothing per request
ever leaves an actor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from dnr.config import JobConfig
from dnr.data.collate import collate
from dnr.data.validate import hash_request_ids
from dnr.evaluation.bootstrap import PairedBootstrap, poisson_weights
from dnr.metrics import MetricAccumulator, metric_ks, per_request_metrics
from dnr.schemas import REQUEST_LOGS
from dnr.storage import Lake
from dnr.checkpoints.reader import load_reranker

C = REQUEST_LOGS.col
MODEL_ARMS = ("candidate", "baseline")
CALIBRATION_BINS = 10
DELTA_EDGES = np.linspace(-1.0, 1.0, 41)
"""Bins of the per-request difference histogram (metrics live in [0, 1], so deltas in [-1, 1])."""
_SANITY = ("nonfinite", "score_sum", "score_sumsq", "score_count", "tied_requests", "multi_requests")


@dataclass(frozen=True)
class ReplaySpec:
    """What to score and which sums to keep; identical on the driver and every actor."""

    checkpoints: dict[str, str]
    """arm (candidate / baseline) -> checkpoint URI."""
    metrics: tuple[str, ...]
    """Metrics compared per request with a bootstrap (the gate's primary first)."""
    replicates: int = 1000
    seed: int = 0
    with_oracle: bool = True

    @property
    def reference(self) -> str:
        """The arm the candidate is compared with first: the baseline model, else the retriever."""
        return "baseline" if "baseline" in self.checkpoints else "retriever"

    @property
    def arms(self) -> tuple[str, ...]:
        models = tuple(a for a in MODEL_ARMS if a in self.checkpoints)
        return models + ("retriever",) + (("oracle",) if self.with_oracle else ())

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        pairs = [("candidate", self.reference)]
        if self.reference != "retriever":
            pairs.append(("candidate", "retriever"))
        return tuple(pairs)

    @property
    def ks(self) -> tuple[int, ...]:
        return metric_ks(self.metrics)


@dataclass
class ReplayState:
    """Additive sums of one or many batches; ``to_vector`` / ``from_vector`` pack them."""

    spec: ReplaySpec
    accumulators: dict[str, MetricAccumulator] = field(init=False)
    bootstraps: dict[str, PairedBootstrap] = field(init=False)
    """``"<a>-<b>/<metric>"`` -> paired sums of metric(a) - metric(b)."""
    delta_hist: np.ndarray = field(init=False)
    """[len(DELTA_EDGES) - 1] per-request primary-metric difference, candidate - reference."""
    calibration: dict[str, np.ndarray] = field(init=False)
    """arm -> [3, CALIBRATION_BINS]: count, sum of predicted probability, sum of labels."""
    sanity: dict[str, np.ndarray] = field(init=False)
    """model arm -> [len(_SANITY)] sums (see ``_SANITY``)."""
    oracle_requests: np.ndarray = field(init=False)
    """[1] requests whose oracle scores were available."""

    def __post_init__(self):
        s = self.spec
        self.accumulators = {arm: MetricAccumulator(ks=s.ks) for arm in s.arms}
        self.bootstraps = {f"{a}-{b}/{m}": PairedBootstrap.empty(s.replicates)
                           for a, b in s.pairs for m in s.metrics}
        self.delta_hist = np.zeros(len(DELTA_EDGES) - 1)
        self.calibration = {arm: np.zeros((3, CALIBRATION_BINS))
                            for arm in s.arms if arm != "oracle"}
        self.sanity = {arm: np.zeros(len(_SANITY)) for arm in s.checkpoints}
        self.oracle_requests = np.zeros(1)

    # ---- packing: a fixed order of named parts ----

    def _parts(self) -> list[tuple[str, np.ndarray]]:
        parts = []
        for arm, acc in self.accumulators.items():
            state = acc.state_dict()
            parts += [(f"acc/{arm}/{k}", v.numpy().reshape(-1)) for k, v in state.items() if k != "ks"]
        parts += [(f"boot/{k}", b.to_vector()) for k, b in self.bootstraps.items()]
        parts.append(("delta_hist", self.delta_hist))
        parts += [(f"cal/{k}", v.reshape(-1)) for k, v in self.calibration.items()]
        parts += [(f"sanity/{k}", v) for k, v in self.sanity.items()]
        parts.append(("oracle_requests", self.oracle_requests))
        return parts

    def to_vector(self) -> np.ndarray:
        return np.concatenate([v.astype(np.float64) for _, v in self._parts()])

    @classmethod
    def from_vector(cls, spec: ReplaySpec, vector: np.ndarray) -> "ReplayState":
        state = cls(spec)
        offset, accs = 0, {arm: {} for arm in state.accumulators}
        for name, part in state._parts():
            chunk = vector[offset:offset + part.size]
            offset += part.size
            kind, _, key = name.partition("/")
            if kind == "acc":
                arm, _, sub = key.partition("/")
                template = state.accumulators[arm].state_dict()[sub]
                accs[arm][sub] = torch.from_numpy(chunk.copy()).reshape(template.shape)
            elif kind == "boot":
                state.bootstraps[key] = PairedBootstrap.from_vector(chunk, spec.replicates)
            else:
                part[...] = chunk.reshape(part.shape)  # views of the state's own arrays
        if offset != vector.size:
            raise ValueError(f"replay state vector has {vector.size} values, the spec needs {offset}")
        for arm, sub in accs.items():
            sub["ks"] = torch.tensor(spec.ks)
            state.accumulators[arm] = MetricAccumulator.from_state_dict(sub)
        return state

    # ---- one batch ----

    @torch.no_grad()
    def update(self, table: pa.Table, models: dict[str, tuple[nn.Module, JobConfig]],
               device: torch.device | str = "cpu") -> None:
        """Score validated request-log rows with every arm and add their sums."""
        s = self.spec
        by_data = {}  # models sharing hashing and lengths share one collated batch
        for _, cfg in models.values():
            if cfg.data not in by_data:
                by_data[cfg.data] = collate(table, cfg.data)
        batches = {arm: by_data[cfg.data] for arm, (_, cfg) in models.items()}
        reference_batch = next(iter(by_data.values()))
        labels, valid = reference_batch.labels, reference_batch.mask & reference_batch.label_mask
        scores = {arm: self._model_scores(arm, models[arm][0], batches[arm], device) for arm in models}
        scores["retriever"] = reference_batch.scores
        oracle = reference_batch.true_click_prob
        if s.with_oracle and oracle is not None and not torch.isnan(oracle[reference_batch.mask]).any():
            scores["oracle"] = oracle
            self.oracle_requests += reference_batch.num_requests

        per_request = {}
        for arm, arm_scores in scores.items():
            self.accumulators[arm].update(arm_scores, labels, valid)
            per_request[arm] = per_request_metrics(arm_scores, labels, valid, s.ks)
            if arm in self.calibration:
                self._calibrate(arm, arm_scores, labels, valid)
        weights = poisson_weights(hash_request_ids(table.column(C.request_id)), s.replicates, s.seed)
        for a, b in s.pairs:
            for metric in s.metrics:
                delta = (per_request[a][metric] - per_request[b][metric]).numpy()
                self.bootstraps[f"{a}-{b}/{metric}"].add(delta, weights)
        primary = (per_request["candidate"][s.metrics[0]] - per_request[s.reference][s.metrics[0]]).numpy()
        primary = primary[~np.isnan(primary)]
        self.delta_hist += np.histogram(np.clip(primary, -1.0, 1.0), DELTA_EDGES)[0]

    def _model_scores(self, arm: str, model: nn.Module, batch, device) -> torch.Tensor:
        """Logits of a model; non-finite ones are counted, then ranked last (never dropped)."""
        logits = model(batch.to(device)).float().cpu()
        real = batch.mask
        finite = torch.isfinite(logits)
        ok = finite & real
        values = logits[ok].double()
        n_real = real.sum(1)
        spread = (logits.masked_fill(~ok, -torch.inf).amax(1) - logits.masked_fill(~ok, torch.inf).amin(1))
        multi = n_real >= 2
        self.sanity[arm] += np.array([
            float((~finite & real).sum()), float(values.sum()), float((values ** 2).sum()),
            float(values.numel()), float((multi & (spread.abs() < 1e-9)).sum()), float(multi.sum()),
        ])
        return torch.where(finite, logits, torch.full_like(logits, -torch.inf))

    def _calibrate(self, arm: str, scores: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> None:
        # the retriever's scores are probabilities already; model logits go through a sigmoid
        prob = scores if arm == "retriever" else torch.sigmoid(scores.double())
        prob, y = prob[valid].double().numpy(), labels[valid].double().numpy()
        bins = np.minimum((prob * CALIBRATION_BINS).astype(np.int64), CALIBRATION_BINS - 1)
        table = self.calibration[arm]
        table[0] += np.bincount(bins, minlength=CALIBRATION_BINS)
        table[1] += np.bincount(bins, weights=prob, minlength=CALIBRATION_BINS)
        table[2] += np.bincount(bins, weights=y, minlength=CALIBRATION_BINS)

    def merge(self, other: "ReplayState") -> "ReplayState":
        return ReplayState.from_vector(self.spec, self.to_vector() + other.to_vector())

    def sanity_summary(self, arm: str) -> dict[str, float]:
        """Non-finite scores, logit std over real candidates, fraction of all-tied requests."""
        nonfinite, total, sq, n, tied, multi = self.sanity[arm]
        mean = total / n if n else float("nan")
        var = max(sq / n - mean ** 2, 0.0) if n else float("nan")
        return {"nonfinite_scores": nonfinite, "score_mean": mean, "score_std": var ** 0.5,
                "tied_fraction": tied / multi if multi else 0.0, "scored_candidates": n}


class ReplayScorer:
    """Scores batches with every arm; loads the checkpoints once.

    As a Ray actor, :meth:`score_shard` adds up a whole shard of the day (a Ray Data
    ``streaming_split`` iterator) and returns one state vector. Called on one table, it returns
    that table's state as a one-row table.
    """

    def __init__(self, spec: ReplaySpec, lake_root: str, use_gpu: bool = False):
        self.spec = spec
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        lake = Lake(lake_root)
        self.models = {}
        for arm, uri in spec.checkpoints.items():
            model, cfg = load_reranker(uri, lake)
            self.models[arm] = (model.to(self.device), cfg)

    def __call__(self, table: pa.Table) -> pa.Table:
        state = ReplayState(self.spec)
        state.update(table, self.models, self.device)
        return pa.table({"state": pa.array([state.to_vector()], pa.list_(pa.float64()))})

    def score_shard(self, shard, batch_size: int) -> np.ndarray:
        """The state vector of every batch of ``shard`` (a Ray Data ``DataIterator``), added up."""
        state = ReplayState(self.spec)
        for table in shard.iter_batches(batch_size=batch_size, batch_format="pyarrow"):
            state.update(table, self.models, self.device)
        return state.to_vector()


def reduce_states(spec: ReplaySpec, vectors) -> ReplayState:
    """Add the state vectors of every batch (an iterable of [D] arrays)."""
    total = None
    for vector in vectors:
        total = vector.copy() if total is None else total + vector
    if total is None:
        return ReplayState(spec)
    return ReplayState.from_vector(spec, total)
