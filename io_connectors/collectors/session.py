"""One websocket feed kept alive: connect, subscribe, read frames, and on any failure reconnect.

Reconnects wait an exponential backoff with full jitter, which resets once a connection delivers
a frame. A staleness watchdog treats a connection that has been silent for ``stale_after``
seconds as dead (exchanges can stop sending without closing) and reconnects, which also
resubscribes. Runs until cancelled; only an ``ExchangeRejected`` from the frame handler ends it.

``on_connected(first)`` is called once the subscriptions are sent on a fresh connection (``first``
for the run's first), ``on_disconnected(reason)`` when a connection is lost or cannot be made:
``stale``, ``closed`` (with the close's detail when it was not clean) or the error's text.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Callable

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, WebSocketException

from io_connectors.backoff import Backoff
from io_connectors.collectors.counters import CollectorCounters

log = logging.getLogger("cryptobeam.collect")
MAX_FRAME_BYTES = 1 << 22


class StaleConnection(Exception):
    """No frame arrived within the staleness limit."""


def _ignore(*_args) -> None:
    return None


def disconnect_reason(error: BaseException, opened: bool) -> str:
    """The ``reason`` of a feed_status record: short words a consumer can match, then detail."""
    if isinstance(error, StaleConnection):
        return "stale"
    if isinstance(error, ConnectionClosedOK):
        return "closed"
    if isinstance(error, ConnectionClosed):
        return f"closed: {error}"
    what = "connection lost" if opened else "cannot connect"
    return f"{what}: {type(error).__name__}: {error}"


async def keep_reading(
    url: str,
    subscriptions: list[dict],
    on_frame: Callable[[str | bytes], None],
    *,
    stale_after: float | None,
    backoff: Backoff,
    counters: CollectorCounters,
    on_connected: Callable[[bool], None] = _ignore,
    on_disconnected: Callable[[str], None] = _ignore,
    name: str = "",
) -> None:
    """``name`` (the exchange) leads each log line: several feeds share one log."""
    where = f"{name} {url}" if name else url
    attempt, connections = 0, 0
    while True:
        opened = False
        try:
            async with connect(url, open_timeout=10, close_timeout=2, max_size=MAX_FRAME_BYTES) as websocket:
                opened = True
                connections += 1
                if connections > 1:
                    counters.reconnects += 1
                for message in subscriptions:
                    await websocket.send(json.dumps(message))
                log.info("connected: %s", where)
                on_connected(connections == 1)
                while True:
                    try:
                        async with asyncio.timeout(stale_after or None):
                            frame = await websocket.recv()
                    except TimeoutError:
                        raise StaleConnection(f"no message for {stale_after:g} s") from None
                    attempt = 0
                    on_frame(frame)
        except StaleConnection as error:
            counters.stale_reconnects += 1
            log.warning("%s: %s; reconnecting", where, error)
            on_disconnected(disconnect_reason(error, opened))
        except (OSError, TimeoutError, WebSocketException) as error:
            if not opened:
                counters.connect_failures += 1
            log.warning(
                "%s: %s (%s: %s)", where, "connection lost" if opened else "cannot connect", type(error).__name__, error
            )
            on_disconnected(disconnect_reason(error, opened))
        delay = backoff.delay(attempt)
        attempt += 1
        log.info("reconnecting in %.2f s: %s", delay, where)
        await asyncio.sleep(delay)
