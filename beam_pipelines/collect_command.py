"""``cryptobeam collect``: an exchange's live public trade feed into Kafka, until stopped.

    cryptobeam collect --exchange binance --symbols BTCUSDT,ETHUSDT --kafka 127.0.0.1:9092

``add_collect_parser`` adds the sub-command to the ``cryptobeam`` parser and ``run_collect`` runs
it and returns the exit code: 0 after a clean stop (SIGINT, SIGTERM, ``--max-seconds``,
``--max-trades``), 2 for a user error (one line, no traceback; this includes an unreachable
broker and an exchange refusing the subscription), 3 when Kafka did not take every message.
Also runnable alone: ``python -m beam_pipelines.collect_command collect ...``.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import time

from beam_pipelines.cli_common import EXIT_PIPELINE_FAILED, EXIT_USER_ERROR


class CollectOptionError(ValueError):
    """Options that cannot work together or with the exchange; shown as one line."""


def add_collect_parser(subparsers) -> argparse.ArgumentParser:
    collect = subparsers.add_parser("collect", help="stream live trades from an exchange's public websocket into Kafka")
    collect.add_argument("--exchange", required=True, help="binance, coinbase or kraken")
    collect.add_argument("--symbols", required=True,
                         help="comma-separated, as the exchange spells them: BTCUSDT (binance), BTC-USD (coinbase), "
                              "BTC/USD (kraken)")
    collect.add_argument("--kafka", required=True, help="Kafka bootstrap servers, e.g. 127.0.0.1:9092")
    collect.add_argument("--topic", default="trades", help="topic for trades (default: trades)")
    collect.add_argument("--dead-letter-topic", default="dead_letters",
                         help="topic for frames that cannot be read (default: dead_letters)")
    collect.add_argument("--channel", help="binance: aggTrade (default) or trade; coinbase: market_trades; kraken: trade")
    collect.add_argument("--ws-url", help="websocket base URL (default: the exchange's public endpoint)")
    collect.add_argument("--rest-url", help="REST base URL used to fill gaps (binance only; default: the public API)")
    collect.add_argument("--stale-after", default="30s",
                         help="reconnect when no message arrives for this long, e.g. 30s; 0 disables (default 30s)")
    collect.add_argument("--backoff-base", type=float, default=0.5, help="first reconnect backoff bound, seconds (0.5)")
    collect.add_argument("--backoff-max", type=float, default=30.0, help="largest reconnect backoff, seconds (30)")
    collect.add_argument("--rest-attempts", type=int, default=5, help="attempts per REST request before a gap "
                                                                      "is recorded as unfilled (5)")
    collect.add_argument("--max-seconds", type=float, help="stop after this many seconds")
    collect.add_argument("--max-trades", type=int, help="stop after publishing this many trades")
    collect.add_argument("--no-progress", action="store_true", help="no periodic progress lines")
    return collect


def collector_settings(args):
    """(feed, settings) from the options, or a CollectOptionError naming what is wrong."""
    from beam_pipelines.cli_common import UserError, parse_duration_seconds
    from io_connectors.collectors import FEEDS
    from io_connectors.collectors.backoff import Backoff
    from io_connectors.collectors.collector import CollectorSettings

    feed = FEEDS.get(args.exchange.lower())
    if feed is None:
        raise CollectOptionError(f"unknown exchange {args.exchange!r}; choose one of: {', '.join(FEEDS)}")
    try:
        symbols = feed.canonical_symbols(args.symbols)
    except ValueError as error:
        raise CollectOptionError(f"--symbols: {error}") from None
    channel = args.channel or feed.channels[0]
    if channel not in feed.channels:
        raise CollectOptionError(f"--channel {channel!r} is not a {feed.name} channel; choose: {', '.join(feed.channels)}")
    ws_url = args.ws_url or feed.ws_url
    if not ws_url.startswith(("ws://", "wss://")):
        raise CollectOptionError(f"--ws-url {ws_url!r} must start with ws:// or wss://")
    if args.rest_url and feed.fetch_range is None:
        raise CollectOptionError(f"--rest-url: {feed.name} missed trades are not fetched over REST")
    rest_url = args.rest_url or feed.rest_url
    if rest_url and not rest_url.startswith(("http://", "https://")):
        raise CollectOptionError(f"--rest-url {rest_url!r} must start with http:// or https://")
    try:
        stale_after = parse_duration_seconds(args.stale_after)
    except UserError as error:
        raise CollectOptionError(f"--stale-after: {error}") from None
    try:
        reconnect = Backoff(base=args.backoff_base, cap=args.backoff_max)
    except ValueError:
        raise CollectOptionError("--backoff-base must be positive and at most --backoff-max") from None
    for flag, value in (("--rest-attempts", args.rest_attempts), ("--max-seconds", args.max_seconds),
                        ("--max-trades", args.max_trades)):
        if value is not None and not value > 0:
            raise CollectOptionError(f"{flag} must be positive")
    return feed, CollectorSettings(
        symbols=tuple(symbols), channel=channel, ws_url=ws_url, rest_url=rest_url, stale_after=stale_after or None,
        reconnect_backoff=reconnect, rest_attempts=args.rest_attempts, max_seconds=args.max_seconds,
        max_trades=args.max_trades, progress_every=None if args.no_progress else 10.0)


def _log_to_stderr() -> None:
    from rich.console import Console
    from rich.logging import RichHandler
    logger = logging.getLogger("cryptobeam.collect")
    logger.setLevel(logging.INFO)
    if not any(getattr(h, "_cryptobeam_collect", False) for h in logger.handlers):
        handler = RichHandler(console=Console(stderr=True), show_path=False, markup=False)
        handler._cryptobeam_collect = True
        logger.addHandler(handler)


async def _until_stopped(collector):
    """Run the collector; SIGINT and SIGTERM ask it to stop cleanly (and flush) instead of dying."""
    import asyncio
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, collector.stop, f"received {sig.name}")
    try:
        return await collector.run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _summary(collector, args, elapsed: float):
    from rich.table import Table
    table = Table(title=f"cryptobeam collect {collector.feed.name} → {args.kafka}/{args.topic}")
    table.add_column("collector")
    table.add_column("count", justify="right")
    for label, value in collector.counters.rows():
        table.add_row(label, f"{value:,}")
    table.add_row("elapsed", f"{elapsed:,.1f} s")
    table.add_row("stopped because", collector.stop_reason or "the feed ended")
    return table


def run_collect(args) -> int:
    import asyncio

    from rich.console import Console

    from io_connectors.collectors.collector import Collector
    from io_connectors.collectors.frames import ExchangeRejected
    from io_connectors.collectors.kafka_output import KafkaOutput, KafkaUnreachable, check_reachable

    def user_error(message: str) -> int:
        print(f"cryptobeam: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR

    try:
        feed, settings = collector_settings(args)
        check_reachable(args.kafka)
    except (CollectOptionError, KafkaUnreachable) as error:
        return user_error(str(error))
    _log_to_stderr()
    collector = Collector(feed, settings, KafkaOutput(args.kafka, args.topic, args.dead_letter_topic))
    started = time.monotonic()
    rejected = None
    try:
        asyncio.run(_until_stopped(collector))
    except ExchangeRejected as error:  # raised after what was collected has been flushed
        collector.stop_reason, rejected = "the exchange refused the subscription", error
    Console().print(_summary(collector, args, time.monotonic() - started))
    if rejected is not None:
        return user_error(str(rejected))
    if collector.counters.undelivered:
        print(f"cryptobeam: error: {collector.counters.undelivered:,} message(s) were not delivered to Kafka",
              file=sys.stderr)
        return EXIT_PIPELINE_FAILED
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cryptobeam")
    add_collect_parser(parser.add_subparsers(dest="command", required=True))
    return run_collect(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
