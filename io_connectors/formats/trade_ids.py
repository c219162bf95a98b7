"""Trade ids for formats whose exchanges publish none (Kraken, some Tardis exchanges).

The id is derived from where the trade was read, so re-reading a file gives the same ids and
dedupe drops the copies.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from io_connectors.files import base_name


def derived_trade_ids(source: str, line_numbers: np.ndarray) -> pa.Array:
    """A stable id for exchanges that publish none: file name, a short hash of its full
    path (so same-named files in different folders or archives never collide), and line."""
    prefix = f"{base_name(source)}@{hashlib.blake2b(source.encode(), digest_size=4).hexdigest()}"
    return pa.array([f"{prefix}:{n}" for n in line_numbers.tolist()], pa.string())
