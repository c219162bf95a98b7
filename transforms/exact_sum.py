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
_LOW_BITS = 26


@dataclass(frozen=True)
class ExactSum:
    numerator: int = 0
    exponent: int = 0  # value = numerator * 2 ** exponent

    @classmethod
    def of(cls, values: np.ndarray) -> "ExactSum":
        values = np.asarray(values, dtype=np.float64)
        values = values[values != 0]
        if not len(values):
            return cls()
        fractions, exponents = np.frexp(values)
        mantissas = (fractions * (1 << _MANTISSA_BITS)).astype(np.int64)
        exponents = exponents.astype(np.int64) - _MANTISSA_BITS
        order = np.argsort(exponents, kind="stable")
        exponents, mantissas = exponents[order], mantissas[order]
        starts = np.flatnonzero(np.r_[True, np.diff(exponents) != 0])
        # Split each 53-bit mantissa so that int64 sums of up to 2**36 values cannot overflow.
        high = np.add.reduceat(mantissas >> _LOW_BITS, starts)
        low = np.add.reduceat(mantissas & ((1 << _LOW_BITS) - 1), starts)
        base = int(exponents[0])
        numerator = 0
        for e, h, lo in zip(exponents[starts].tolist(), high.tolist(), low.tolist()):
            numerator += ((h << _LOW_BITS) + lo) << (e - base)
        return cls(numerator, base)

    def __add__(self, other: "ExactSum") -> "ExactSum":
        if not other.numerator:
            return self
        if not self.numerator:
            return other
        base = min(self.exponent, other.exponent)
        return ExactSum((self.numerator << (self.exponent - base)) + (other.numerator << (other.exponent - base)), base)

    def __float__(self) -> float:
        if not self.numerator:
            return 0.0
        if self.exponent >= 0:
            return float(self.numerator << self.exponent)
        # Shift away excess precision first (keeping a sticky bit) so the single rounding is correct.
        sign = -1.0 if self.numerator < 0 else 1.0
        numerator, exponent = abs(self.numerator), self.exponent
        excess = numerator.bit_length() - 60
        if excess > 0:
            sticky = 1 if numerator & ((1 << excess) - 1) else 0
            numerator = (numerator >> excess) | sticky
            exponent += excess
        return sign * math.ldexp(float(numerator), exponent)
