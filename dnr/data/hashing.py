"""Stateless, vectorised hashing of int64 ids (splitmix64).

Used for two things: mapping arbitrary industrial item ids into a fixed number of embedding
buckets (so new items never need a vocabulary rebuild), and deriving per-id pseudo-random
numbers in the synthetic world without materialising a table of every user or item.
"""

from __future__ import annotations

import numpy as np

# splitmix64's constants; the serving hash (dnr.serving.hashing) imports these very ones
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
"""The increment (2^64 / golden ratio)."""
M1 = np.uint64(0xBF58476D1CE4E5B9)
M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Hash an integer array element-wise to uint64. Same input and seed, same output."""
    with np.errstate(over="ignore"):
        z = np.asarray(x).astype(np.uint64, copy=True)
        z += np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * GOLDEN + GOLDEN
        z ^= z >> np.uint64(30)
        z *= M1
        z ^= z >> np.uint64(27)
        z *= M2
        z ^= z >> np.uint64(31)
    return z


def hash_to_unit(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Hash ids to float64 uniforms in [0, 1) (53 bits of the hash)."""
    return (splitmix64(x, seed) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def bucketize(ids: np.ndarray, num_buckets: int, seed: int = 0) -> np.ndarray:
    """Map int64 ids to buckets 1..num_buckets-1; bucket 0 is reserved for padding."""
    if num_buckets < 2:
        raise ValueError(f"num_buckets must be >= 2 (bucket 0 is padding), got {num_buckets}")
    return (splitmix64(ids, seed) % np.uint64(num_buckets - 1)).astype(np.int64) + 1
