"""Running ``cryptobeam collect`` (``beam_pipelines.collect_command`` holds its options): the feeds'
settings checked against what each exchange offers, the collector until it is stopped, its
metrics endpoint, and the summary.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import sys
import time

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from beam_pipelines.cli_common import EXIT_PIPELINE_FAILED, EXIT_USER_ERROR, UserError, parse_duration_seconds
from beam_pipelines.collect_command import CollectOptionError
from io_connectors.backoff import Backoff
from io_connectors.collectors import FEEDS
from io_connectors.collectors.chain_collector import run_chain_collect
from io_connectors.collectors.collector import Collector, CollectorSettings, FeedSettings
from io_connectors.collectors.frames import ExchangeRejected
from io_connectors.collectors.kafka_output import KafkaOutput, KafkaUnreachable, check_reachable
from io_connectors.prometheus_metrics import CollectMetrics, MetricsPortInUse, serve_metrics

PER_FEED_VALUE = re.compile(r"([A-Za-z0-9_]+)=(.*)", re.DOTALL)  # EXCHANGE=VALUE; a URL's scheme has no '='


def requested_feeds(args) -> list[tuple]:
    """[(feed, symbols)] from ``--feed`` (or the one-feed ``--exchange``/``--symbols``), checked."""
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
    logger = logging.getLogger("cryptobeam.collect")
    logger.setLevel(logging.INFO)
    if not any(getattr(h, "_cryptobeam_collect", False) for h in logger.handlers):
        handler = RichHandler(console=Console(stderr=True), show_path=False, markup=False)
        handler._cryptobeam_collect = True
        logger.addHandler(handler)


async def _until_stopped(collector):
    """Run the collector; SIGINT and SIGTERM ask it to stop cleanly (and flush) instead of dying."""
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
    return serve_metrics(port, CollectMetrics(collector))


def run_collect(args) -> int:
    if args.chain:
        return run_chain_collect(args)

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
