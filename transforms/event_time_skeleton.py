"""The event-time skeleton: parsed records of any type in, deduplicated chunks per (key, window)
out, with dead letters for what it rejects. Validate -> Key -> route too-late -> Dedupe -> Window.

Computations (time bars, information bars) start from what it emits. It is applied as labelled
steps of its caller rather than as a composite of its own, so that the steps keep the names a
running Dataflow job was launched with (``TradesToBars/Dedupe``...), which ``--update`` needs.
"""

from __future__ import annotations

import typing

from transforms.bar_spec import BarSpec
from transforms.dedupe import DedupeTrades
from transforms.keys import KeyRecords
from transforms.lateness import RouteTooLateAndChunk
from transforms.record_types import RecordType
from transforms.validate_records import ValidateRecords


def event_time_skeleton(records, record_type: RecordType, spec: BarSpec, time_bounds: tuple, counted_as: str = ""):
    """Returns (unique: windowed ((*key, window start), UniqueRecords), [dead-letter PCollections]).
    ``counted_as`` prefixes dedupe's counters for records other than trades."""
    valid = records | "Validate" >> ValidateRecords(*time_bounds, record_type=record_type)
    in_time = (
        valid.valid
        | "KeyBySymbol" >> KeyRecords(record_type)
        | "RouteTooLateAndStampEventTime" >> RouteTooLateAndChunk(spec, record_type)
    )
    deduplicated = in_time.in_time | "Dedupe" >> DedupeTrades(
        spec.runner_expiry_micros, counted_as, typing.Tuple[record_type.window_key_hint, typing.Any]
    )
    unique = deduplicated.unique | "Window" >> spec.window_into()
    return unique, [valid.dead_letter, in_time.dead_letter, deduplicated.dead_letter]
