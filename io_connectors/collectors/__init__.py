"""Live exchange collectors: public websocket trade feeds -> normalized trades -> Kafka.

One module per exchange wire format (``binance``, ``coinbase``, ``kraken``), each exposing a pure
``parse_frame(frame, receive_time_us) -> list[trade]`` and its ``FEED``; the machinery they share
lives beside them (``session``: reconnects and the staleness watchdog, ``trade_ids``: duplicates
and gaps, ``rest``: retries, ``kafka_output``: the wire format, ``feed_status``: connection-state
records, ``collector``: the whole loop, one or several feeds in one process).
"""

from io_connectors.collectors import binance, coinbase, kraken
from io_connectors.collectors.feed import ExchangeFeed

FEEDS: dict[str, ExchangeFeed] = {feed.name: feed for feed in (binance.FEED, coinbase.FEED, kraken.FEED)}

__all__ = ["FEEDS", "ExchangeFeed"]
