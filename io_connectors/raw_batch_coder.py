"""The coder of raw batches between stages, registered for every PCollection typed ``RawBatch``.

Kept apart from ``raw_batch`` because it needs Beam, and the command line reads the parsers
(which use ``RawBatch``) while it plans, before Beam is needed.
"""

from __future__ import annotations

from io_connectors.raw_batch import RawBatch
from transforms.sized_coders import SizedPickleCoder, register


class RawBatchCoder(SizedPickleCoder):
    value_type = RawBatch


register(RawBatchCoder)
