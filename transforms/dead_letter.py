"""Dead letters: every record that does not become part of a bar says why, and where it came from.

Beam-free: parsers build them too, and the command line imports the parsers while it plans.
Counting them is Beam's (``transforms.dead_letter_counts``).
"""

from __future__ import annotations

import json
import time

import pyarrow as pa

from transforms.event_time import micros_to_iso

DEAD_LETTER_TAG = "dead_letter"


def dead_letter(
    reason: str,
    message: str,
    stage: str,
    payload,
    source: str,
    source_offset=None,
    exchange=None,
    symbol=None,
    event_time=None,
) -> dict:
    """One dead-letter record shaped like ``schemas/dead_letter.avsc``."""
    if isinstance(payload, str):
        payload_bytes, payload_string = payload.encode("utf-8", "surrogateescape"), payload
    elif isinstance(payload, (bytes, bytearray, memoryview)):
        payload_bytes = bytes(payload)
        payload_string = payload_bytes.decode("utf-8", "replace")
    elif payload is None:
        payload_bytes = payload_string = None
    else:
        payload_string = json.dumps(payload, default=str, sort_keys=True)
        payload_bytes = payload_string.encode("utf-8")
    return {
        "reason": reason,
        "error_message": message,
        "stage": stage,
        "payload_string": payload_string,
        "payload_bytes": payload_bytes,
        "source": source,
        "source_offset": None if source_offset is None else int(source_offset),
        "exchange": exchange,
        "symbol": symbol,
        "event_time": None if event_time is None else int(event_time),
        "dead_letter_time": int(time.time() * 1_000_000),
    }


def batch_rows_dead_letters(
    batch: pa.Table,
    rows: list[int],
    reasons: list[str],
    messages: list[str],
    stage: str,
    event_times: list[int | None],
    record_fields: list[str],
    time_fields: tuple[str, ...],
    key_fields: tuple[str, str],
) -> list[dict]:
    """Dead letters of rows of a parsed batch (its ``record_fields``, then ``source``,
    ``source_offset`` and ``payload``), each with its payload and where it came from. The payload is
    the original bytes, or the record's fields as JSON (times in ISO) when they are gone; the
    ``key_fields`` fill the dead letter's exchange and symbol.

    The rows are taken and converted once, together: per row, a column lookup would cost a pass
    over the whole column, and a batch of hostile input can reject every row.
    """
    picked = batch.take(pa.array(rows, pa.int64()))
    values = {}
    for name in {*record_fields, *key_fields, "source", "source_offset", "payload"}:
        column = picked.column(name)
        # As integers: a time past the year 9999 has no datetime, yet must reach its dead letter.
        values[name] = (column.cast(pa.int64()) if name in time_fields else column).to_pylist()
    exchanges, symbols = values[key_fields[0]], values[key_fields[1]]
    letters = []
    for k, (reason, message, event_time_us) in enumerate(zip(reasons, messages, event_times)):
        payload = values["payload"][k]
        if payload is None:  # the original is gone: the normalized record as JSON
            payload = record_json({name: values[name][k] for name in record_fields}, time_fields)
        letters.append(
            dead_letter(
                reason,
                message,
                stage,
                payload,
                values["source"][k],
                values["source_offset"][k],
                exchanges[k],
                symbols[k],
                event_time_us,
            )
        )
    return letters


def record_json(record: dict, time_fields: tuple[str, ...]) -> str:
    """A normalized record as a dead letter's payload: its ``time_fields`` (microseconds) in ISO."""
    record = {
        name: micros_to_iso(value) if name in time_fields and value is not None else value
        for name, value in record.items()
    }
    return json.dumps(record, sort_keys=True)
