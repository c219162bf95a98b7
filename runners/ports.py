"""Free localhost ports for the local services (Kafka, Flink, job services, emulators)."""

from __future__ import annotations

import os
import random
import socket

PORT_RANGE_ENV = "CRYPTOBEAM_PORT_RANGE"
"""``LOW-HIGH``: take ports from this range only. Processes given disjoint ranges never hand out
the same port, which a port the kernel picks could be in two processes at once (the test script
runs two test processes side by side)."""


def free_port() -> int:
    span = os.environ.get(PORT_RANGE_ENV)
    if not span:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    low, high = _port_range(span)
    for port in random.sample(range(low, high + 1), high - low + 1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORT_RANGE_ENV}={span}")


def _port_range(span: str) -> tuple[int, int]:
    try:
        low, high = (int(part) for part in span.split("-"))
    except ValueError:
        raise ValueError(f"{PORT_RANGE_ENV}={span!r}: expected LOW-HIGH, e.g. 20000-21999") from None
    if not 1024 <= low <= high <= 65535:
        raise ValueError(f"{PORT_RANGE_ENV}={span!r}: expected 1024 <= LOW <= HIGH <= 65535")
    return low, high
