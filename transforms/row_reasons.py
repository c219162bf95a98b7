"""Why rows of a batch are rejected: the first reason found for each row, kept as small integer
codes so that checking a batch of any size costs a few vectorized passes and no per-row strings."""

from __future__ import annotations

import numpy as np


class FirstReasons:
    """Reasons are flagged in order of precedence; a row keeps the first one that matches it."""

    def __init__(self, rows: int):
        self.names = [""]
        self.codes = np.zeros(rows, dtype=np.int16)  # index into names; 0 while the row is still good

    def flag(self, mask, reason: str) -> None:
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            self.names.append(reason)
            self.codes[mask & (self.codes == 0)] = len(self.names) - 1

    def good(self) -> np.ndarray:
        return self.codes == 0

    def rejected(self) -> list[tuple[int, str]]:
        """(row, reason) of every rejected row, in row order."""
        return [(i, self.names[self.codes[i]]) for i in np.flatnonzero(self.codes).tolist()]

    def per_row(self) -> np.ndarray:
        """The reason of every row as text ('' for a good row)."""
        return np.array(self.names, dtype=object)[self.codes]
