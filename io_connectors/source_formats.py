"""Input formats: each exchange's files, how to parse them, and how their names give a symbol.

Beam-free, so that the command line can check ``--source`` and plan without importing Beam.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

from io_connectors.formats import binance, coinbase, kraken, normalized, tardis
from io_connectors.formats.symbols import binance_symbol_from_name, leading_symbol_from_name
from io_connectors.instruments import with_canonical_instruments


@dataclass(frozen=True)
class SourceFormat:
    name: str
    description: str
    parser: Callable
    layout: str  # "text", "parquet" or "avro"
    default_exchange: str | None
    symbol_from_name: Callable[[str], str | None] | None = None


SOURCES = {s.name: s for s in [
    SourceFormat("binance-aggtrades", "Binance public data aggTrades CSV (.zip or .csv)", binance.parse_aggtrades,
                 "text", "binance", binance_symbol_from_name),
    SourceFormat("binance-trades", "Binance public data trades CSV (.zip or .csv)", binance.parse_trades,
                 "text", "binance", binance_symbol_from_name),
    SourceFormat("tardis-trades", "Tardis.dev normalized trades CSV (.csv or .csv.gz)", tardis.parse_tardis_trades,
                 "text", None, None),
    SourceFormat("coinbase-trades", "Coinbase Exchange trades, JSON lines", coinbase.parse_coinbase_trades,
                 "text", "coinbase", leading_symbol_from_name),
    SourceFormat("kraken-trades", "Kraken trade history CSV (timestamp,price,volume)", kraken.parse_kraken_trades,
                 "text", "kraken", leading_symbol_from_name),
    SourceFormat("parquet", "Parquet files in the normalized trade schema", normalized.parse_normalized,
                 "parquet", None, None),
    SourceFormat("avro", "Avro files in the normalized trade schema", normalized.parse_normalized,
                 "avro", None, None),
]}


def parser_for(source: SourceFormat, exchange: str | None = None, symbol: str | None = None,
               instruments: str | None = None):
    """The source's parser with the user's overrides bound in, its trades carrying canonical base
    and quote (the shipped instruments table, extended by the ``instruments`` CSV if given).

    Raises InstrumentsError for an unusable ``instruments`` file."""
    options = {"symbol": symbol}
    if exchange or source.default_exchange:
        options["exchange"] = exchange or source.default_exchange
    return with_canonical_instruments(functools.partial(source.parser, **options), instruments)
