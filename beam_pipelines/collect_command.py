"""``cryptobeam collect``: exchanges' live public trade feeds into Kafka, until stopped.

    cryptobeam collect --feed binance:BTCUSDT,ETHUSDT --feed coinbase:BTC-USD --feed kraken:BTC/USD \
        --kafka 127.0.0.1:9092
    cryptobeam collect --exchange binance --symbols BTCUSDT,ETHUSDT --kafka 127.0.0.1:9092   # one feed

Every feed runs its own websocket session in this one process; all trades go to ``--topic`` and
every change of a feed's connection to ``--status-topic`` (``schemas/feed_status.avsc``). The
per-feed options ``--channel``, ``--ws-url`` and ``--rest-url`` take ``EXCHANGE=VALUE``; a plain
value means the only feed of a one-feed run.

``add_collect_parser`` adds the sub-command to the ``cryptobeam`` parser and ``run_collect`` runs
it and returns the exit code: 0 after a clean stop (SIGINT, SIGTERM, ``--max-seconds``,
``--max-trades``), 2 for a user error (one line, no traceback; this includes an unreachable
broker and an exchange refusing the subscription), 3 when Kafka did not take every message.
Also runnable alone: ``python -m beam_pipelines.collect_command collect ...``.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import time

from beam_pipelines.cli_common import EXIT_PIPELINE_FAILED, EXIT_USER_ERROR

PER_FEED_VALUE = re.compile(r"([A-Za-z0-9_]+)=(.*)", re.DOTALL)  # EXCHANGE=VALUE; a URL's scheme has no '='


class CollectOptionError(ValueError):
    """Options that cannot work together or with the exchange; shown as one line."""


def add_collect_parser(subparsers) -> argparse.ArgumentParser:
    collect = subparsers.add_parser("collect", help="stream live trades from exchanges' public websockets into Kafka")
    collect.add_argument(
        "--feed",
        action="append",
        metavar="EXCHANGE:SYMBOLS",
        help="an exchange and its comma-separated symbols, as the exchange spells them; repeat for "
        "several exchanges in one process: binance:BTCUSDT,ETHUSDT coinbase:BTC-USD "
        "kraken:BTC/USD",
    )
    collect.add_argument("--exchange", help="one feed's exchange, with --symbols (the same as one --feed)")
    collect.add_argument("--symbols", help="that feed's comma-separated symbols")
    collect.add_argument("--kafka", required=True, help="Kafka bootstrap servers, e.g. 127.0.0.1:9092")
    collect.add_argument("--topic", default="trades", help="topic for every feed's trades (default: trades)")
    collect.add_argument(
        "--dead-letter-topic",
        default="dead_letters",
        help="topic for frames that cannot be read (default: dead_letters)",
    )
    collect.add_argument(
        "--status-topic",
        default="feed_status",
        help="topic for connection-state records per exchange and symbol (default: feed_status)",
    )
    collect.add_argument(
        "--channel",
        action="append",
        metavar="[EXCHANGE=]CHANNEL",
        help="binance: aggTrade (default) or trade; coinbase: market_trades; kraken: trade",
    )
    collect.add_argument(
        "--ws-url",
        action="append",
        metavar="[EXCHANGE=]URL",
        help="websocket base URL (default: the exchange's public endpoint)",
    )
    collect.add_argument(
        "--rest-url",
        action="append",
        metavar="[EXCHANGE=]URL",
        help="REST base URL used to fill gaps (binance only; default: the public API)",
    )
    collect.add_argument(
        "--stale-after",
        default="30s",
        help="reconnect when no message arrives for this long, e.g. 30s; 0 disables (default 30s)",
    )
    collect.add_argument("--backoff-base", type=float, default=0.5, help="first reconnect backoff bound, seconds (0.5)")
    collect.add_argument("--backoff-max", type=float, default=30.0, help="largest reconnect backoff, seconds (30)")
    collect.add_argument(
        "--rest-attempts",
        type=int,
        default=5,
        help="attempts per REST request before a gap is recorded as unfilled (5)",
    )
    collect.add_argument("--max-seconds", type=float, help="stop after this many seconds")
    collect.add_argument("--max-trades", type=int, help="stop after publishing this many trades, all feeds together")
    collect.add_argument("--no-progress", action="store_true", help="no periodic progress lines")
    add_metrics_port_option(collect)
    return collect


def add_metrics_port_option(parser) -> None:
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on this port, all interfaces (docs/metrics.md); off by default",
    )


def requested_feeds(args) -> list[tuple]:
    """[(feed, symbols)] from ``--feed`` (or the one-feed ``--exchange``/``--symbols``), checked."""
    from io_connectors.collectors import FEEDS

    if args.feed and (args.exchange is not None or args.symbols is not None):
        raise CollectOptionError(
            "give either --feed EXCHANGE:SYMBOLS (repeatable) or --exchange with --symbols, not both"
        )
    if args.feed:
        requests = []
        for text in args.feed:
            exchange, colon, symbols = text.partition(":")
            if not colon:
                raise CollectOptionError(f"--feed {text!r}: expected EXCHANGE:SYMBOLS, e.g. binance:BTCUSDT,ETHUSDT")
            requests.append((exchange, symbols, f"--feed {text!r}"))
    elif args.exchange is None or args.symbols is None:
        raise CollectOptionError("give --feed EXCHANGE:SYMBOLS (repeatable), or --exchange with --symbols")
    else:
        requests = [(args.exchange, args.symbols, "--symbols")]
    chosen: dict[str, tuple] = {}
    for exchange, symbols_text, where in requests:
        feed = FEEDS.get(exchange.strip().lower())
        if feed is None:
            raise CollectOptionError(f"unknown exchange {exchange!r}; choose one of: {', '.join(FEEDS)}")
        if feed.name in chosen:
            raise CollectOptionError(f"{feed.name} is given twice; list all its symbols in one --feed")
        try:
            chosen[feed.name] = (feed, feed.canonical_symbols(symbols_text))
        except ValueError as error:
            raise CollectOptionError(f"{where}: {error}") from None
    return list(chosen.values())


def per_feed_values(flag: str, values: list[str] | None, feed_names: list[str]) -> dict[str, str]:
    """``--ws-url binance=ws://...`` per feed; a plain value means the only feed of a one-feed run."""
    chosen: dict[str, str] = {}
    for value in values or []:
        match = PER_FEED_VALUE.fullmatch(value)
        if match:
            name, given = match.group(1).lower(), match.group(2)
            if name not in feed_names:
                raise CollectOptionError(
                    f"{flag} {value!r}: {name} is not one of this run's feeds ({', '.join(feed_names)})"
                )
        elif len(feed_names) > 1:
            raise CollectOptionError(
                f"{flag} {value!r}: this run has several feeds; say which, e.g. {flag} {feed_names[0]}=..."
            )
        else:
            name, given = feed_names[0], value
        if name in chosen:
            raise CollectOptionError(f"{flag} is given twice for {name}")
        chosen[name] = given
    return chosen


def feed_settings(feed, symbols: list[str], channel: str | None, ws_url: str | None, rest_url: str | None):
    """One feed's settings, its channel and URLs checked against what the exchange offers."""
    from io_connectors.collectors.collector import FeedSettings

    channel = channel or feed.channels[0]
    if channel not in feed.channels:
        raise CollectOptionError(
            f"--channel {channel!r} is not a {feed.name} channel; choose: {', '.join(feed.channels)}"
        )
    ws_url = ws_url or feed.ws_url
    if not ws_url.startswith(("ws://", "wss://")):
        raise CollectOptionError(f"--ws-url {ws_url!r} must start with ws:// or wss://")
    if rest_url and feed.fetch_range is None:
        raise CollectOptionError(f"--rest-url: {feed.name} missed trades are not fetched over REST")
    rest_url = rest_url or feed.rest_url
    if rest_url and not rest_url.startswith(("http://", "https://")):
        raise CollectOptionError(f"--rest-url {rest_url!r} must start with http:// or https://")
    return FeedSettings(feed=feed, symbols=tuple(symbols), channel=channel, ws_url=ws_url, rest_url=rest_url)


def collector_settings(args):
    """([feed settings], shared settings) from the options, or a CollectOptionError naming what is wrong."""
    from beam_pipelines.cli_common import UserError, parse_duration_seconds
    from io_connectors.collectors.backoff import Backoff
    from io_connectors.collectors.collector import CollectorSettings

    requests = requested_feeds(args)
    names = [feed.name for feed, _ in requests]
    channels, ws_urls, rest_urls = (
        per_feed_values(flag, values, names)
        for flag, values in (("--channel", args.channel), ("--ws-url", args.ws_url), ("--rest-url", args.rest_url))
    )
    feeds = [
        feed_settings(feed, symbols, channels.get(feed.name), ws_urls.get(feed.name), rest_urls.get(feed.name))
        for feed, symbols in requests
    ]
    if args.status_topic in (args.topic, args.dead_letter_topic):
        raise CollectOptionError(
            f"--status-topic {args.status_topic!r} must differ from --topic and --dead-letter-topic"
        )
    try:
        stale_after = parse_duration_seconds(args.stale_after)
    except UserError as error:
        raise CollectOptionError(f"--stale-after: {error}") from None
    try:
        reconnect = Backoff(base=args.backoff_base, cap=args.backoff_max)
    except ValueError:
        raise CollectOptionError("--backoff-base must be positive and at most --backoff-max") from None
    for flag, value in (
        ("--rest-attempts", args.rest_attempts),
        ("--max-seconds", args.max_seconds),
        ("--max-trades", args.max_trades),
    ):
        if value is not None and not value > 0:
            raise CollectOptionError(f"{flag} must be positive")
    if args.metrics_port is not None and not 0 < args.metrics_port < 65536:
        raise CollectOptionError(f"--metrics-port {args.metrics_port} is not a port (1-65535)")
    return feeds, CollectorSettings(
        stale_after=stale_after or None,
        reconnect_backoff=reconnect,
        rest_attempts=args.rest_attempts,
        max_seconds=args.max_seconds,
        max_trades=args.max_trades,
        progress_every=None if args.no_progress else 10.0,
    )


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
    """One column per feed, and their sum when there are several; undelivered is the shared producer's."""
    from rich.table import Table

    feeds = collector.feeds
    table = Table(title=f"cryptobeam collect {', '.join(f.name for f in feeds)} → {args.kafka}/{args.topic}")
    table.add_column("collector")
    if len(feeds) == 1:
        columns = [collector.counters.rows()]
        table.add_column(feeds[0].name, justify="right")
    else:
        columns = [f.counters.rows() for f in feeds] + [collector.counters.rows()]
        for feed in feeds:
            table.add_column(feed.name, justify="right")
        table.add_column("all feeds", justify="right")
    shared = {"undelivered to Kafka"}
    for index, (label, _) in enumerate(columns[-1]):
        cells = [f"{column[index][1]:,}" for column in columns]
        if label in shared and len(columns) > 1:
            cells[:-1] = [""] * (len(cells) - 1)
        table.add_row(label, *cells)
    blank = [""] * (len(columns) - 1)
    table.add_row("elapsed", *blank, f"{elapsed:,.1f} s")
    table.add_row("stopped because", *blank, collector.stop_reason or "the feed ended")
    return table


def _serve_metrics(port: int | None, collector):
    """The metrics endpoint reading the collector's live counters, or None without --metrics-port."""
    if port is None:
        return None
    from io_connectors.prometheus_metrics import CollectMetrics, serve_metrics

    return serve_metrics(port, CollectMetrics(collector))


def run_collect(args) -> int:
    import asyncio

    from rich.console import Console

    from io_connectors.collectors.collector import Collector
    from io_connectors.collectors.frames import ExchangeRejected
    from io_connectors.collectors.kafka_output import KafkaOutput, KafkaUnreachable, check_reachable
    from io_connectors.prometheus_metrics import MetricsPortInUse

    def user_error(message: str) -> int:
        print(f"cryptobeam: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR

    try:
        feeds, settings = collector_settings(args)
        check_reachable(args.kafka)
    except (CollectOptionError, KafkaUnreachable) as error:
        return user_error(str(error))
    _log_to_stderr()
    collector = Collector(
        feeds, settings, KafkaOutput(args.kafka, args.topic, args.dead_letter_topic, args.status_topic)
    )
    try:
        metrics = _serve_metrics(args.metrics_port, collector)
    except MetricsPortInUse as error:
        collector.output.close(0)
        return user_error(str(error))
    started = time.monotonic()
    rejected = None
    try:
        asyncio.run(_until_stopped(collector))
    except ExchangeRejected as error:  # raised after what was collected has been flushed
        rejected = error
    finally:
        if metrics is not None:
            metrics.close()
    Console().print(_summary(collector, args, time.monotonic() - started))
    if rejected is not None:
        return user_error(str(rejected))
    if collector.counters.undelivered:
        print(
            f"cryptobeam: error: {collector.counters.undelivered:,} message(s) were not delivered to Kafka",
            file=sys.stderr,
        )
        return EXIT_PIPELINE_FAILED
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cryptobeam")
    add_collect_parser(parser.add_subparsers(dest="command", required=True))
    return run_collect(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
