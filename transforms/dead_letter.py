"""Dead letters: every record that does not become part of a bar says why, and where it came from.

Beam-free: parsers build them too, and the command line imports the parsers while it plans.
Counting them is Beam's (``transforms.dead_letter_counts``).
"""

from __future__ import annotations

import json
import time

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
