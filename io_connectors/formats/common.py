"""What every text format does after splitting: reject failed checks, build the trade batch."""
from __future__ import annotations

import numpy as np

from io_connectors.formats.delimited import Fields
from transforms.trade_batch import make_trade_batch


def reject_failed(fields: Fields, checks: list[tuple[np.ndarray, str]], source: str) -> np.ndarray:
    """Dead-letter each line at its first failed check; return the mask of lines that passed all."""
    good = np.ones(len(fields), dtype=bool)
    for ok, message in checks:
        failed = good & ~ok
        for i in np.flatnonzero(failed).tolist():
            fields.dead_letters.append(_parse_dead_letter(fields, i, message, source))
        good &= ok
    return good


def _parse_dead_letter(fields: Fields, i: int, message: str, source: str) -> dict:
    from transforms.dead_letter import dead_letter
    return dead_letter("malformed", message, "parse", fields.payloads[i].as_py(), source, int(fields.line_numbers[i]))


def trades_from_fields(fields: Fields, good: np.ndarray, source: str, **columns):
    """Build the batch of good lines; array-valued columns are indexed by ``good``, scalars broadcast."""
    selected = {k: (v[good] if isinstance(v, np.ndarray) else v) for k, v in columns.items()}
    index = np.flatnonzero(good)
    import pyarrow as pa
    payloads = fields.payloads.take(pa.array(index, pa.int64()))
    return make_trade_batch(source=source, source_offset=fields.line_numbers[good], payload=payloads, **selected)
