"""Exactly rounded, order-independent float sums.

Volumes summed chunk by chunk in a different order differ in their last bits. Backfill and stream
chunk the same trades differently, yet must give identical bars, so sums are kept exact (an
integer times a power of two) and rounded once, at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_MANTISSA_BITS = 53
_BUCKET_SHIFT = 3
_BUCKET_BITS = 1 << _BUCKET_SHIFT  # a power of two, so buckets are found with shifts and masks
_PIECE_BITS = 30
_MAX_VALUES_PER_PASS = 1 << 23
_DENSE_BUCKETS_ABOVE = 64


@dataclass(frozen=True)
class ExactSum:
    numerator: int = 0
    exponent: int = 0  # value = numerator * 2 ** exponent

    @classmethod
    def of(cls, values: np.ndarray) -> "ExactSum":
        return cls.of_many([values])[0]

    @classmethod
    def of_many(cls, arrays: list[np.ndarray]) -> list["ExactSum"]:
        """Exact sums of several arrays in one vectorized pass."""
        values = np.concatenate([np.asarray(a, dtype=np.float64) for a in arrays])
        groups = np.repeat(np.arange(len(arrays)), [len(a) for a in arrays])
        return cls.of_groups(values, groups, len(arrays))

    @classmethod
    def of_groups(cls, values: np.ndarray, groups: np.ndarray, n_groups: int) -> list["ExactSum"]:
        """Exact sum of values per group id (0 .. n_groups-1), all groups in one vectorized pass."""
        values = np.asarray(values, dtype=np.float64)
        groups = np.asarray(groups, dtype=np.int64)
        if len(values) > _MAX_VALUES_PER_PASS:  # keep every int64 accumulator far from overflow
            half = len(values) // 2
            first = cls.of_groups(values[:half], groups[:half], n_groups)
            second = cls.of_groups(values[half:], groups[half:], n_groups)
            return [a + b for a, b in zip(first, second)]
        nonzero = values != 0
        if not nonzero.all():
            values, groups = values[nonzero], groups[nonzero]
        sums = [cls()] * n_groups
        if not len(values):
            return sums
        fractions, exponents = np.frexp(values)  # value = fraction * 2**exponent, 0.5 <= |fraction| < 1
        # Values whose exponents share a bucket of _BUCKET_BITS are aligned as integers: a 53-bit
        # mantissa shifted by < 8 bits, exact in float64. Each aligned value is split into two
        # 30-bit pieces, and the pieces are summed per (group, bucket) in float64, which is exact:
        # a sum of up to 2**23 values below 2**30 stays below 2**53.
        base = int(exponents.min())
        relative = exponents - base
        bucket_of = relative >> _BUCKET_SHIFT
        n_buckets = int(bucket_of.max()) + 1
        if n_buckets > _DENSE_BUCKETS_ABOVE or n_groups * n_buckets > 4 * len(values):
            # A wide exponent range: number only the buckets in use, so the sums stay small.
            buckets_used, bucket_of = np.unique(bucket_of, return_inverse=True)
            n_buckets = len(buckets_used)
        else:
            buckets_used = np.arange(n_buckets)
        key = groups * n_buckets + bucket_of
        relative &= _BUCKET_BITS - 1
        relative += _MANTISSA_BITS
        aligned = np.ldexp(fractions, relative)
        highs = aligned * (1.0 / (1 << _PIECE_BITS))
        np.floor(highs, out=highs)
        aligned -= highs * float(1 << _PIECE_BITS)  # now the low piece, in [0, 2**30)
        size = n_groups * n_buckets
        pieces = [np.bincount(key, weights=aligned, minlength=size), np.bincount(key, weights=highs, minlength=size)]
        used = np.flatnonzero((pieces[0] != 0) | (pieces[1] != 0))
        if not len(used):  # every group's values cancel out
            return sums
        group_of, bucket_index = np.divmod(used, n_buckets)
        bucket_of_key = buckets_used[bucket_index]
        # Keys are sorted by (group, bucket): each group's buckets are a run, its lowest bucket first.
        runs = np.flatnonzero(np.diff(group_of)) + 1
        firsts, ends = np.r_[0, runs], np.r_[runs, len(used)]
        lowest = bucket_of_key[firsts]
        shifts = ((bucket_of_key - np.repeat(lowest, ends - firsts)) * _BUCKET_BITS).tolist()
        lows, highs = (p[used].astype(np.int64).tolist() for p in pieces)
        numerators = [(lo + (hi << _PIECE_BITS)) << shift for lo, hi, shift in zip(lows, highs, shifts)]
        if len(firsts) < len(used):  # some group spans several buckets: add its run
            numerators = [sum(numerators[first:end]) for first, end in zip(firsts.tolist(), ends.tolist())]
        exponents = (base - _MANTISSA_BITS + lowest * _BUCKET_BITS).tolist()
        for group, numerator, exponent in zip(group_of[firsts].tolist(), numerators, exponents):
            sums[group] = cls(numerator, exponent)
        return sums

    def __add__(self, other: "ExactSum") -> "ExactSum":
        if not other.numerator:
            return self
        if not self.numerator:
            return other
        base = min(self.exponent, other.exponent)
        return ExactSum((self.numerator << (self.exponent - base)) + (other.numerator << (other.exponent - base)), base)

    def __neg__(self) -> "ExactSum":
        return ExactSum(-self.numerator, self.exponent)

    def __sub__(self, other: "ExactSum") -> "ExactSum":
        return self + (-other)

    def __float__(self) -> float:
        if not self.numerator:
            return 0.0
        if self.exponent >= 0:
            try:
                return float(self.numerator << self.exponent)
            except OverflowError:
                return math.copysign(math.inf, self.numerator)
        # Shift away excess precision first (keeping a sticky bit) so the single rounding is correct.
        sign = -1.0 if self.numerator < 0 else 1.0
        numerator, exponent = abs(self.numerator), self.exponent
        excess = numerator.bit_length() - 60
        if excess > 0:
            sticky = 1 if numerator & ((1 << excess) - 1) else 0
            numerator = (numerator >> excess) | sticky
            exponent += excess
        try:
            return sign * math.ldexp(float(numerator), exponent)
        except OverflowError:
            return sign * math.inf
