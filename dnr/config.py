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
