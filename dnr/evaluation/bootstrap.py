"""Paired Poisson bootstrap whose state adds up across batches and workers.

The replay evaluation compares two models on the same requests. The quantity of interest is the
mean per-request difference of a metric (candidate minus baseline) over the requests where the
metric is defined. A classical bootstrap resamples the requests, which needs every per-request
difference in one place. The Poisson bootstrap gives each request an independent Poisson(1)
weight in each replicate instead; for large samples it matches the multinomial resampling, and
a replicate's estimate is ``sum(w * d) / sum(w)``, two sums that add across batches. So each
scoring actor keeps ``[R]`` sums and the driver adds them: no per-request data leaves a worker.

Weights are a pure function of the request id and the replicate index (splitmix64), so both
models of a pair see the same resample (that makes it paired) and a re-run gives the same
interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dnr.data.hashing import hash_to_unit, splitmix64

_MAX_K = 20
# CDF of Poisson(1) at 0..19; P(K >= 20) ~ 4e-20 is below float64 resolution of the uniforms.
_POISSON1_CDF = np.cumsum([math.exp(-1.0) / math.factorial(k) for k in range(_MAX_K)])


def poisson_weights(request_hashes: np.ndarray, replicates: int, seed: int = 0) -> np.ndarray:
    """[n, R] float64 Poisson(1) weights from uint64 request hashes; deterministic."""
    streams = splitmix64(np.arange(replicates, dtype=np.uint64), seed)  # [R]
    with np.errstate(over="ignore"):
        mixed = np.asarray(request_hashes, dtype=np.uint64)[:, None] ^ streams[None, :]
    uniforms = hash_to_unit(mixed)
    return np.searchsorted(_POISSON1_CDF, uniforms, side="right").astype(np.float64)


@dataclass
class PairedBootstrap:
    """Sums for one metric's paired difference; ``add`` per batch, ``merge`` across workers."""

    replicates: int
    weighted_delta: np.ndarray
    """[R] sum over included requests of w_r * d."""
    weight: np.ndarray
    """[R] sum over included requests of w_r."""
    delta_sum: float = 0.0
    count: float = 0.0

    @classmethod
    def empty(cls, replicates: int) -> "PairedBootstrap":
        return cls(replicates, np.zeros(replicates), np.zeros(replicates))

    def add(self, delta: np.ndarray, weights: np.ndarray) -> None:
        """delta [n] (NaN = request excluded from this metric), weights [n, R]."""
        keep = ~np.isnan(delta)
        d, w = delta[keep], weights[keep]
        self.weighted_delta += d @ w
        self.weight += w.sum(axis=0)
        self.delta_sum += float(d.sum())
        self.count += float(keep.sum())

    def to_vector(self) -> np.ndarray:
        return np.concatenate([self.weighted_delta, self.weight, [self.delta_sum, self.count]])

    @classmethod
    def from_vector(cls, vector: np.ndarray, replicates: int) -> "PairedBootstrap":
        r = replicates
        return cls(r, vector[:r].copy(), vector[r:2 * r].copy(), float(vector[2 * r]), float(vector[2 * r + 1]))

    @staticmethod
    def size(replicates: int) -> int:
        return 2 * replicates + 2

    def interval(self, confidence: float) -> "DeltaInterval":
        """Point estimate (the plain mean difference) and the percentile interval."""
        if self.count == 0:
            return DeltaInterval(math.nan, math.nan, math.nan, 0)
        usable = self.weight > 0
        estimates = self.weighted_delta[usable] / self.weight[usable]
        tail = (1.0 - confidence) / 2.0
        low, high = np.quantile(estimates, [tail, 1.0 - tail])
        return DeltaInterval(self.delta_sum / self.count, float(low), float(high), int(self.count))


@dataclass(frozen=True)
class DeltaInterval:
    """Mean per-request difference with its bootstrap interval."""

    mean: float
    low: float
    high: float
    requests: int

    def to_dict(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high, "requests": self.requests}
