"""Input formats: each exchange's files, how to parse them, and how their names give a symbol.

Beam-free, so that the command line can check ``--source`` and plan without importing Beam.
A run may read several formats (``--input SOURCE:GLOB``): each file knows its own
(``InputFile.source``), and each raw batch is parsed by its file's format's parser.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

from io_connectors.formats import binance, coinbase, kraken, normalized, tardis, token_transfer_records
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
    record_type: str = "trade"
    """What its parser gives: ``trade`` or another record type of ``transforms.record_types``
    (``token_transfer``), which a run reads through its own skeleton; or ``block``, blocks the
    run's token transfers are joined with (``transforms.block_join``)."""
    header: bool = False
    """Text files whose first line names the columns: the reader hands it to every later batch of
    the file too (``io_connectors.formats.ethereum_etl.HEADER_KEY``), so columns in any order are
    read right past the first batch."""


SOURCES = {
    s.name: s
    for s in [
        SourceFormat(
            "binance-aggtrades",
            "Binance public data aggTrades CSV (.zip or .csv)",
            binance.parse_aggtrades,
            "text",
            "binance",
            binance_symbol_from_name,
        ),
        SourceFormat(
            "binance-trades",
            "Binance public data trades CSV (.zip or .csv)",
            binance.parse_trades,
            "text",
            "binance",
            binance_symbol_from_name,
        ),
        SourceFormat(
            "tardis-trades",
            "Tardis.dev normalized trades CSV (.csv or .csv.gz)",
            tardis.parse_tardis_trades,
            "text",
            None,
            None,
        ),
        SourceFormat(
            "coinbase-trades",
            "Coinbase Exchange trades, JSON lines",
            coinbase.parse_coinbase_trades,
            "text",
            "coinbase",
            leading_symbol_from_name,
        ),
        SourceFormat(
            "kraken-trades",
            "Kraken trade history CSV (timestamp,price,volume)",
            kraken.parse_kraken_trades,
            "text",
            "kraken",
            leading_symbol_from_name,
        ),
        SourceFormat(
            "parquet",
            "Parquet files in the normalized trade schema",
            normalized.parse_normalized,
            "parquet",
            None,
            None,
        ),
        SourceFormat(
            "avro", "Avro files in the normalized trade schema", normalized.parse_normalized, "avro", None, None
        ),
        SourceFormat(
            "ethereum-etl-token-transfers",
            "ethereum-etl token_transfers export: ERC-20 transfers, CSV or JSON lines (on-chain tables)",
            token_transfer_records.parse_ethereum_etl_transfers,
            "text",
            None,
            None,
            record_type="token_transfer",
            header=True,
        ),
        SourceFormat(
            "ethereum-etl-blocks",
            "ethereum-etl blocks export, CSV or JSON lines: fills in the block hash and time of token "
            "transfers that lack them (ethereumetl export_token_transfers)",
            token_transfer_records.parse_ethereum_etl_blocks,
            "text",
            None,
            None,
            record_type="block",
            header=True,
        ),
    ]
}

RECORD_TYPE_INPUTS = {"trade": "trades", "token_transfer": "token_transfers", "block": "blocks"}
"""The name ``TradesToBars`` takes each record type's raw batches under."""


SOURCE_FORMAT_KEY = "source_format"
"""Key in ``RawBatch.extra``: the name of the format the batch's file was read as."""


def split_source_prefix(text: str) -> tuple[str | None, str]:
    """``--input`` text as (source name, path or glob): ``binance-aggtrades:dumps/*.zip`` names its
    source. Only a registered source's name before the first colon is one, so ``gs://...``, ``C:\\...``
    and any other text is a path or glob as it stands (``./parquet:x`` reads a file named so)."""
    prefix, colon, rest = text.partition(":")
    return (prefix, rest) if colon and prefix in SOURCES else (None, text)


def source_of(input_file, default: SourceFormat | None) -> SourceFormat:
    """The format an ``InputFile`` is read as: its own, else the run's ``--source`` (``default``)."""
    if input_file.source:
        return SOURCES[input_file.source]
    if default is None:
        raise ValueError(f"{input_file.path!r} has no source format")
    return default


def parser_for(
    source: SourceFormat, exchange: str | None = None, symbol: str | None = None, instruments: str | None = None
):
    """The source's parser with the user's overrides bound in, its trades carrying canonical base
    and quote (the shipped instruments table, extended by the ``instruments`` CSV if given).

    Raises InstrumentsError for an unusable ``instruments`` file. Records other than trades
    carry no instrument: their parser is the source's own."""
    if source.record_type != "trade":
        return source.parser
    options = {"symbol": symbol}
    if exchange or source.default_exchange:
        options["exchange"] = exchange or source.default_exchange
    return with_canonical_instruments(functools.partial(source.parser, **options), instruments)


def parser_for_sources(
    sources: dict[str, SourceFormat],
    exchange: str | None = None,
    symbol: str | None = None,
    instruments: str | None = None,
):
    """The parser of a run reading ``sources`` (by name): a single source's own parser, or one that
    parses each raw batch with the parser of the format its file was read as."""
    parsers = {name: parser_for(source, exchange, symbol, instruments) for name, source in sources.items()}
    if len(parsers) == 1:
        return next(iter(parsers.values()))
    return ParserBySource(parsers)


def parsers_by_input(
    sources: dict[str, SourceFormat],
    exchange: str | None = None,
    symbol: str | None = None,
    instruments: str | None = None,
) -> dict[str, Callable]:
    """{``TradesToBars`` input name (``trades``, ``token_transfers``): the parser of the run's
    sources of that record type}."""
    by_type: dict[str, dict[str, SourceFormat]] = {}
    for name, source in sources.items():
        by_type.setdefault(source.record_type, {})[name] = source
    return {
        RECORD_TYPE_INPUTS[record_type]: parser_for_sources(of_type, exchange, symbol, instruments)
        for record_type, of_type in by_type.items()
    }


def record_type_of(raw) -> str:
    """The record type of a raw batch read by ``io_connectors.sources`` (its format says)."""
    return SOURCES[raw.extra[SOURCE_FORMAT_KEY]].record_type


class ParserBySource:
    """Several sources in one run: each raw batch goes to its own source's parser (the reader
    names the format in ``raw.extra[SOURCE_FORMAT_KEY]``), so each source is parsed at its own edge."""

    def __init__(self, parsers: dict[str, Callable]):
        self._parsers = parsers

    def __call__(self, raw):
        return self._parsers[raw.extra[SOURCE_FORMAT_KEY]](raw)
