"""Exponential backoff with full jitter: a random wait in [0, min(cap, base * 2**attempt)].

Full jitter spreads the retries of many clients (or many gap fills) so they do not hit an exchange
or a node in lock step after an outage. One policy serves the collectors' websocket reconnects and
REST retries, the Ethereum node's JSON-RPC retries and the chain collector's repeated steps.
Standard library only, so any module may use it without slowing its import.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backoff:
    base: float = 0.5
    cap: float = 30.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self):
        if not (self.base > 0 and self.cap >= self.base):
            raise ValueError("backoff needs 0 < base <= max")

    def delay(self, attempt: int) -> float:
        """The wait before retry number ``attempt`` (0 for the first retry)."""
        return self.rng.uniform(0, min(self.cap, self.base * 2 ** min(attempt, 60)))
