"""``cryptobeam collect``: exchanges' live public trade feeds into Kafka, until stopped.

    cryptobeam collect --feed binance:BTCUSDT,ETHUSDT --feed coinbase:BTC-USD --feed kraken:BTC/USD \\
        --kafka 127.0.0.1:9092
    cryptobeam collect --chain ethereum --rpc http://127.0.0.1:8545 --kafka 127.0.0.1:9092   # a chain
    cryptobeam collect --exchange binance --symbols BTCUSDT,ETHUSDT --kafka 127.0.0.1:9092   # one feed

Every feed runs its own websocket session in this one process; all trades go to ``--topic`` and
every change of a feed's connection to ``--status-topic`` (``schemas/feed_status.avsc``). The
per-feed options ``--channel``, ``--ws-url`` and ``--rest-url`` take ``EXCHANGE=VALUE``; a plain
value means the only feed of a one-feed run.

``add_collect_parser`` adds the sub-command to the ``cryptobeam`` parser and
``collect_run.run_collect`` runs it and returns the exit code: 0 after a clean stop (SIGINT, SIGTERM, ``--max-seconds``,
``--max-trades``), 2 for a user error (one line, no traceback; this includes an unreachable
broker and an exchange refusing the subscription), 3 when Kafka did not take every message.
``--chain`` follows a chain's node instead (``io_connectors.collectors.chain_collector``).

The command line imports this module at start to build its parser, so it holds the options
only; checking them against the exchanges and running the collector is ``beam_pipelines.collect_run``.
"""

from __future__ import annotations

import argparse

from io_connectors.chain_options import add_chain_collect_options


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
    add_chain_collect_options(collect)
    return collect


def add_metrics_port_option(parser) -> None:
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on this port, all interfaces (docs/metrics.md); off by default",
    )
