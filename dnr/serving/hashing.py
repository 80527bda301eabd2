"""The item-id hash of :mod:`dnr.data.hashing` in torch int64 arithmetic, so that it can run
inside the exported serving program and a serving system never re-implements it.

torch has no usable uint64 arithmetic, so the uint64 splitmix64 is written on int64, whose bits
are the same two's-complement bits:

* ``+`` and ``*`` wrap modulo 2^64 exactly like uint64 (the low 64 bits of the product do not
  depend on the signedness);
* ``>>`` on int64 is arithmetic (it copies the sign bit), so a logical shift by k masks the top
  k bits off afterwards;
* ``%`` on int64 sees a negative number where uint64 sees a value >= 2^63, so ``z mod n`` is
  computed from the two unsigned 32-bit halves: z = hi * 2^32 + lo, hence
  z mod n = ((hi mod n) * (2^32 mod n) + lo) mod n, every term nonnegative and below 2^63 as
  long as n < 2^31.

Bit-exact with :func:`dnr.data.hashing.bucketize` (a unit test checks negative and extreme ids).
"""

from __future__ import annotations

import torch

# the training hash's own constants: one definition, so the two can never drift apart
from dnr.data.hashing import GOLDEN, M1, M2

ALGORITHM = "splitmix64"
"""Recorded in the serving manifest with num_buckets and hash_seed."""
MAX_BUCKETS = 1 << 31
"""Bucket counts up to this keep every intermediate of the split modulo below 2^63."""

_MASK64 = (1 << 64) - 1
_LOW32 = (1 << 32) - 1


def _as_int64(value: int) -> int:
    """A uint64 constant as the int64 with the same bits (what an int64 tensor can hold)."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def _logical_shift_right(z: torch.Tensor, k: int) -> torch.Tensor:
    return (z >> k) & ((1 << (64 - k)) - 1)


def splitmix64(ids: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """int64 ids [...] -> int64 tensor [...] holding the bits of the uint64 splitmix64 hash."""
    z = ids.to(torch.int64) + _as_int64((seed & _MASK64) * int(GOLDEN) + int(GOLDEN))
    z = z ^ _logical_shift_right(z, 30)
    z = z * _as_int64(int(M1))
    z = z ^ _logical_shift_right(z, 27)
    z = z * _as_int64(int(M2))
    return z ^ _logical_shift_right(z, 31)


def bucketize(ids: torch.Tensor, num_buckets: int, seed: int = 0) -> torch.Tensor:
    """int64 ids [...] -> buckets [...] in 1..num_buckets-1 (0 is padding), as the numpy version."""
    if not 2 <= num_buckets <= MAX_BUCKETS:
        raise ValueError(f"num_buckets must be in [2, 2^31] for the in-program hash, got {num_buckets}")
    n = num_buckets - 1
    z = splitmix64(ids, seed)
    high, low = _logical_shift_right(z, 32), z & _LOW32
    return ((high % n) * ((1 << 32) % n) + low) % n + 1
