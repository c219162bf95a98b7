"""Canonical instruments: every trade's exchange-native symbol mapped to canonical base and quote.

``BTCUSDT`` on Binance, ``BTC-USD`` on Coinbase and ``XBT/USD`` or ``XXBTZUSD`` on Kraken all
name bitcoin, and fusing exchanges needs them to say so alike. The shipped table
(``instruments.csv``, ``exchange,symbol,base,quote``) holds the three exchanges' major pairs; a
user file in the same layout extends or overrides it. A symbol in neither keeps a best-effort
split of its text (or null) with asset aliases made canonical, and is counted: it never fails a
run.

The mapping is applied in one place, ``with_canonical_instruments``, which wraps any parser. The
table always wins over the base and quote a record carries (normalized files and collector
messages carry the exchange's own spelling, e.g. XBT); a record's own pair is kept, made
canonical, only for a symbol the table does not know.

Beam-free and cheap to import: the command line checks ``--instruments`` without Beam.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from io_connectors.formats.symbols import BINANCE_QUOTES, KRAKEN_QUOTES, split_by_separator
from io_connectors.user_files import check_text_fields, csv_rows, read_user_text
from transforms.arrow_arrays import one_array, one_value

SHIPPED_TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "instruments.csv")
COLUMNS = ["exchange", "symbol", "base", "quote"]
MAX_FIELD_CHARS = 100
MAX_FILE_BYTES = 64 * 1024 * 1024  # far beyond any list of instruments; guards against a wrong file

# Other spellings of one asset, on any exchange.
ASSET_ALIASES = {"XBT": "BTC", "XDG": "DOGE"}
# Kraken's legacy four-letter codes: X for crypto, Z for fiat. Only these: a four-letter code
# that merely starts with X or Z is another asset.
KRAKEN_LEGACY_ASSETS = {
    "XXBT": "BTC",
    "XETH": "ETH",
    "XLTC": "LTC",
    "XXRP": "XRP",
    "XXLM": "XLM",
    "XXMR": "XMR",
    "XETC": "ETC",
    "XZEC": "ZEC",
    "XREP": "REP",
    "XMLN": "MLN",
    "XXDG": "DOGE",
    "XICN": "ICN",
    "XNMC": "NMC",
    "XXVN": "XVN",
    "ZUSD": "USD",
    "ZEUR": "EUR",
    "ZGBP": "GBP",
    "ZCAD": "CAD",
    "ZJPY": "JPY",
    "ZAUD": "AUD",
    "ZCHF": "CHF",
}

UNKNOWN_RECORDS_COUNTER = "instrument_unknown_records"
"""Counter (namespace ``cryptobeam``) of parsed records whose symbol is not in the table."""
UNKNOWN_SYMBOL_COUNTER_PREFIX = "instrument_unknown."
"""One counter per unknown ``exchange:symbol`` (its records); distinct unknown symbols = counters."""
MAX_NAMED_UNKNOWN = 1000
"""Unknown symbols named per parser instance; any more share the counter ``…(more)``, so a
hostile input cannot make a counter per row."""
MORE_UNKNOWN = "(more)"


class InstrumentsError(ValueError):
    """A user instruments file that cannot be used; the message is one line naming file and line."""


Pair = tuple  # (base, quote), either may be None


def lookup_key(exchange: str, symbol: str) -> tuple[str, str]:
    """Exchange ids are lower case and symbols upper case wherever they come from."""
    return exchange.strip().lower(), symbol.strip().upper()


def canonical_asset(code: str | None, exchange: str | None = None) -> str | None:
    """An asset code as the table spells it: upper case, aliases and (on Kraken) legacy codes resolved."""
    if code is None:
        return None
    upper = code.strip().upper()
    if not upper:
        return None
    if exchange == "kraken":
        upper = KRAKEN_LEGACY_ASSETS.get(upper, upper)
    return ASSET_ALIASES.get(upper, upper)


def best_effort_pair(exchange: str, symbol: str, known_assets: frozenset = frozenset()) -> Pair:
    """A split of the symbol by the exchange's conventions, made canonical, or (None, None).

    A separator (``-``, ``/``, ``_``) splits; otherwise a known quote suffix does. Where several
    suffixes fit (``XBTUSD``: TUSD or USD), the longest one that leaves a known base wins, else
    the longest one."""
    if exchange != "binance":
        base, quote = split_by_separator(symbol)
        if base is not None:
            return canonical_asset(base, exchange), canonical_asset(quote, exchange)
    splits = [
        (canonical_asset(base, exchange), canonical_asset(quote, exchange))
        for base, quote in _suffix_splits(symbol, KRAKEN_QUOTES if exchange == "kraken" else BINANCE_QUOTES)
    ]
    for base, quote in splits:
        if base in known_assets:
            return base, quote
    if splits:
        return splits[0]
    if exchange == "binance":
        base, quote = split_by_separator(symbol)
        if base is not None:
            return canonical_asset(base, exchange), canonical_asset(quote, exchange)
    return None, None


def _suffix_splits(symbol: str, quotes: list[str]) -> list[tuple[str, str]]:
    """Every (base, quote) that a quote suffix cuts, longest quote first (as ``split_by_quote``)."""
    upper = symbol.upper()
    return [(upper[: -len(quote)], quote) for quote in quotes if upper.endswith(quote) and len(upper) > len(quote)]


# ---------------------------------------------------------------------- the table


def _rows_of(text: str, name: str) -> dict[tuple[str, str], Pair]:
    """The rows of an instruments CSV, checked; any flaw raises InstrumentsError naming the line."""
    table: dict[tuple[str, str], Pair] = {}
    for line, values in csv_rows(text, name, COLUMNS, InstrumentsError):
        check_text_fields(name, line, COLUMNS, values, InstrumentsError, MAX_FIELD_CHARS)
        key, pair = lookup_key(values[0], values[1]), (values[2].upper(), values[3].upper())
        if table.get(key, pair) != pair:
            raise InstrumentsError(
                f"{name} line {line}: {values[0]} {values[1]} is listed again as "
                f"{pair[0]}/{pair[1]}, before as {table[key][0]}/{table[key][1]}"
            )
        table[key] = pair
    return table


def read_instruments_file(path: str) -> dict[tuple[str, str], Pair]:
    """A user's instruments CSV as {(exchange, symbol): (base, quote)}, or one InstrumentsError."""
    text, name = read_user_text(path, InstrumentsError, MAX_FILE_BYTES, "an instruments list")
    return _rows_of(text, name)


_SHIPPED: dict | None = None


def shipped_instruments() -> dict[tuple[str, str], Pair]:
    global _SHIPPED
    if _SHIPPED is None:
        with open(SHIPPED_TABLE, encoding="utf-8") as handle:
            _SHIPPED = _rows_of(handle.read(), "instruments.csv (shipped)")
    return _SHIPPED


def load_instruments(path: str | None = None) -> dict[tuple[str, str], Pair]:
    """The shipped table, extended and overridden by the user's file if given."""
    table = dict(shipped_instruments())
    if path:
        table.update(read_instruments_file(path))
    return table


def assets_of(table: dict) -> frozenset:
    return frozenset(asset for pair in table.values() for asset in pair)


def instruments_digest(path: str | None = None) -> str:
    """A short digest of the effective table (shipped plus the user's file), for a run's settings:
    a resumed run whose table changed is not the same run. Raises InstrumentsError for a bad file."""
    rows = "\n".join(",".join((*key, *pair)) for key, pair in sorted(load_instruments(path).items()))
    return hashlib.sha256(rows.encode("utf-8")).hexdigest()[:16]


def canonical_pair(
    table: dict,
    exchange: str,
    symbol: str,
    base: str | None = None,
    quote: str | None = None,
    known_assets: frozenset | None = None,
) -> tuple[Pair, bool]:
    """((base, quote), known) of one trade's instrument: the table's pair, else the record's own
    pair made canonical, else a best-effort split of the symbol."""
    key = lookup_key(exchange, symbol)
    if key in table:
        return table[key], True
    exchange_id = key[0]
    if base and quote:
        return (canonical_asset(base, exchange_id), canonical_asset(quote, exchange_id)), False
    return best_effort_pair(exchange_id, symbol, assets_of(table) if known_assets is None else known_assets), False


# ---------------------------------------------------------------------- applying it to batches


@dataclass
class _Resolved:
    base: list
    quote: list
    unknown: list  # (exchange, symbol) per distinct value, or None when known or not a symbol


class CanonicalInstruments:
    """A parser wrapped so that every batch it returns carries canonical base and quote.

    Picklable: the table travels with it (a remote worker may not see the user's file), the
    per-process caches do not.
    """

    def __init__(self, parser, table: dict):
        self.parser = parser
        self.table = table
        self._init_caches()

    def _init_caches(self):
        self._assets = assets_of(self.table)
        self._cache: dict[tuple, tuple[Pair, bool]] = {}
        self._named_unknown: set[str] = set()

    def __getstate__(self):
        return {"parser": self.parser, "table": self.table}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_caches()

    def __call__(self, raw):
        trades, dead = self.parser(raw)
        return self.canonicalize(trades), dead

    def canonicalize(self, batch: pa.Table) -> pa.Table:
        """The batch with base and quote replaced by the canonical pair. The distinct (exchange,
        symbol, base, quote) values are resolved once each and broadcast to their rows."""
        if not batch.num_rows:
            return batch
        columns = [one_array(batch.column(name)) for name in COLUMNS]
        single = _single_tuple(columns)
        if single:
            resolved = self._resolve([tuple(column[0].as_py() for column in columns)])
            self._count(resolved, np.array([batch.num_rows]))
            if all(_already(columns[2 + j], (resolved.base, resolved.quote)[j][0]) for j in range(2)):
                return batch
            index = None
        else:
            codes, firsts = _distinct_rows(columns)
            rows = pa.table(dict(zip(COLUMNS, columns))).take(pa.array(firsts, pa.int64()))
            resolved = self._resolve(list(zip(*(rows.column(name).to_pylist() for name in COLUMNS))))
            self._count(resolved, np.bincount(codes, minlength=len(firsts)))
            index = pa.array(codes, pa.int32())
        for name, values in (("base", resolved.base), ("quote", resolved.quote)):
            distinct = pa.array(values, pa.string())
            column = pa.repeat(distinct[0], batch.num_rows) if index is None else distinct.take(index)
            batch = batch.set_column(batch.schema.get_field_index(name), batch.schema.field(name), column)
        return batch

    def _resolve(self, tuples: list[tuple]) -> _Resolved:
        resolved = _Resolved([], [], [])
        for exchange, symbol, base, quote in tuples:
            if not exchange or not symbol:  # not an instrument: validation dead-letters the row
                resolved.base.append(base)
                resolved.quote.append(quote)
                resolved.unknown.append(None)
                continue
            answer = self._cache.get((exchange, symbol, base, quote))
            if answer is None:
                if len(self._cache) > 4096:  # hostile input with a symbol per row: keep memory flat
                    self._cache.clear()
                answer = canonical_pair(self.table, exchange, symbol, base, quote, self._assets)
                self._cache[(exchange, symbol, base, quote)] = answer
            (canonical_base, canonical_quote), known = answer
            resolved.base.append(canonical_base)
            resolved.quote.append(canonical_quote)
            resolved.unknown.append(None if known else (exchange, symbol))
        return resolved

    def _count(self, resolved: _Resolved, rows_per_value: np.ndarray) -> None:
        """Count unknown instruments' records, in total and per symbol, where a pipeline runs."""
        beam = sys.modules.get("apache_beam")  # outside a pipeline (planning, validate) nothing counts
        if beam is None or not any(resolved.unknown):
            return
        per_symbol: dict[str, int] = {}
        for unknown, rows in zip(resolved.unknown, rows_per_value.tolist()):
            if unknown is not None and rows:
                name = self._counter_name(*unknown)
                per_symbol[name] = per_symbol.get(name, 0) + rows
        counter = beam.metrics.Metrics.counter
        counter("cryptobeam", UNKNOWN_RECORDS_COUNTER).inc(sum(per_symbol.values()))
        for name, rows in per_symbol.items():
            counter("cryptobeam", UNKNOWN_SYMBOL_COUNTER_PREFIX + name).inc(rows)

    def _counter_name(self, exchange: str, symbol: str) -> str:
        name = f"{exchange}:{symbol}"
        if len(name) > MAX_FIELD_CHARS or not name.isprintable():
            digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()
            escaped = name[: MAX_FIELD_CHARS - 14].encode("unicode_escape").decode("ascii")
            name = f"{escaped[: MAX_FIELD_CHARS - 14]}…{digest}"
        if name not in self._named_unknown:
            if len(self._named_unknown) >= MAX_NAMED_UNKNOWN:
                return MORE_UNKNOWN
            self._named_unknown.add(name)
        return name


def _single_tuple(columns: list[pa.Array]) -> bool:
    """Every row has the same exchange and symbol (neither null) and the same base and quote."""
    for j, column in enumerate(columns):
        if column.null_count == len(column) and j >= 2:
            continue
        if column.null_count or not one_value(column):
            return False
    return True


def _already(column: pa.Array, value: str | None) -> bool:
    """The single-valued column already holds ``value`` in every row."""
    if value is None:
        return column.null_count == len(column)
    return column.null_count == 0 and column[0].as_py() == value


def _distinct_rows(columns: list[pa.Array]) -> tuple[np.ndarray, np.ndarray]:
    """(code per row, first row of each code) of the distinct combinations of the columns; codes
    number the combinations in order of first appearance."""
    codes = np.zeros(len(columns[0]), np.int64)
    for column in columns:
        encoded = one_array(pc.dictionary_encode(column, null_encoding="encode"))
        combined = codes * len(encoded.dictionary) + encoded.indices.to_numpy(zero_copy_only=False)
        codes = (
            one_array(pc.dictionary_encode(pa.array(combined))).indices.to_numpy(zero_copy_only=False).astype(np.int64)
        )
    new = np.empty(len(codes), bool)
    new[0] = True
    new[1:] = codes[1:] > np.maximum.accumulate(codes)[:-1]
    return codes, np.flatnonzero(new)


def with_canonical_instruments(parser, instruments_path: str | None = None) -> CanonicalInstruments:
    """``parser`` whose batches carry canonical base and quote (the shipped table, extended and
    overridden by ``instruments_path``). A bad user file raises InstrumentsError here, at once."""
    if isinstance(parser, CanonicalInstruments):
        parser = parser.parser
    return CanonicalInstruments(parser, load_instruments(instruments_path))
