"""What every text format does after splitting: reject failed checks, build the trade batch."""

from __future__ import annotations

import numpy as np

from io_connectors.formats.delimited import Fields
from transforms.trade_batch import make_trade_batch


def reject_failed(fields: Fields, checks: list[tuple[np.ndarray, str]], source: str) -> np.ndarray:
    """Dead-letter each line at its first failed check; return the mask of lines that passed all."""
    good = np.ones(len(fields), dtype=bool)
    for ok, message in checks:
        fields.dead_letter_lines(good & ~ok, "malformed", message, source)
        good &= ok
    return good


def trades_from_fields(fields: Fields, good: np.ndarray, source: str, **columns):
    """Build the batch of good lines; array-valued columns are indexed by ``good``, scalars broadcast."""
    selected = {k: (v[good] if isinstance(v, np.ndarray) else v) for k, v in columns.items()}
    return make_trade_batch(
        source=source, source_offset=fields.line_numbers[good], payload=fields.payloads_of(good), **selected
    )
