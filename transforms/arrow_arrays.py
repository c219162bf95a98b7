"""Arrow columns as single arrays, without copying what is already one."""
from __future__ import annotations

import pyarrow as pa


def one_array(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    """The values as one Array. A single chunk is taken as it is: ``combine_chunks`` would copy it."""
    if isinstance(values, pa.ChunkedArray):
        return values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()
    return values
