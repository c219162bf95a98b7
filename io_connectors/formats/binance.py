"""Binance public data (data.binance.vision): ``trades`` and ``aggTrades`` CSV, zipped or plain.

Spot files have an ``is_best_match`` column, futures files do not; files from 2025 on may carry
a header and microsecond times. ``is_buyer_maker`` true means the buyer rested, so the taker sold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from io_connectors.formats.clean_csv import read_clean_batch
from io_connectors.formats.common import reject_failed
from io_connectors.formats.delimited import epoch_to_micros, parse_bool, parse_float, parse_int, split_fields
from io_connectors.raw_batch import RawBatch
from transforms.trade_batch import make_trade_batch


@dataclass(frozen=True)
class BinanceLayout:
    names: tuple[str, ...]
    optional_tail: int  # trailing columns that only spot files have
    id_column: int
    price_column: int
    amount_column: int
    time_column: int
    buyer_maker_column: int

    @property
    def field_counts(self) -> set[int]:
        return {len(self.names), len(self.names) - self.optional_tail}

    @property
    def headers(self) -> list[list[str]]:
        return [list(self.names), list(self.names[: len(self.names) - self.optional_tail])]


AGG_TRADES = BinanceLayout(
    (
        "agg_trade_id",
        "price",
        "quantity",
        "first_trade_id",
        "last_trade_id",
        "transact_time",
        "is_buyer_maker",
        "is_best_match",
    ),
    1,
    0,
    1,
    2,
    5,
    6,
)
TRADES = BinanceLayout(("id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match"), 1, 0, 1, 2, 4, 5)


def parse_binance(raw: RawBatch, layout: BinanceLayout, exchange: str = "binance", symbol: str | None = None):
    symbol = symbol or raw.symbol_hint
    clean = (
        read_clean_batch(
            raw,
            layout.field_counts,
            layout.headers,
            {
                layout.id_column: pa.int64(),
                layout.price_column: pa.float64(),
                layout.amount_column: pa.float64(),
                layout.time_column: pa.int64(),
                layout.buyer_maker_column: pa.bool_(),
            },
        )
        if symbol
        else None
    )
    if clean is not None:
        c = clean.columns
        return _trades(
            raw.source,
            clean.line_numbers,
            clean.payloads,
            exchange,
            symbol,
            c[layout.id_column],
            c[layout.price_column],
            c[layout.amount_column],
            c[layout.time_column],
            c[layout.buyer_maker_column],
        ), clean.dead_letters
    fields = split_fields(raw, layout.field_counts, layout.headers)
    ids, ok_id = parse_int(fields.column(layout.id_column))
    prices, ok_price = parse_float(fields.column(layout.price_column))
    amounts, ok_amount = parse_float(fields.column(layout.amount_column))
    times, ok_time = parse_int(fields.column(layout.time_column))
    buyer_maker, ok_side = parse_bool(fields.column(layout.buyer_maker_column))
    good = reject_failed(
        fields,
        [
            (ok_id, f"{layout.names[layout.id_column]} is not an integer"),
            (ok_price, "price is not a number"),
            (ok_amount, f"{layout.names[layout.amount_column]} is not a number"),
            (ok_time, f"{layout.names[layout.time_column]} is not an integer epoch time"),
            (ok_side, "is_buyer_maker is not true or false"),
            (np.full(len(fields), symbol is not None), "no symbol: not in the file name and --symbol not given"),
        ],
        raw.source,
    )
    trades = _trades(
        raw.source,
        fields.line_numbers[good],
        fields.payloads_of(good),
        exchange,
        symbol,
        ids[good],
        prices[good],
        amounts[good],
        times[good],
        buyer_maker[good],
    )
    return trades, fields.dead_letters


def _trades(source, line_numbers, payloads, exchange, symbol, ids, prices, amounts, times, buyer_maker):
    return make_trade_batch(
        exchange=exchange,
        symbol=symbol,
        trade_id=pa.array(ids).cast(pa.string()),
        price=prices,
        amount=amounts,
        side=pc.if_else(pa.array(buyer_maker), "sell", "buy"),
        event_time=epoch_to_micros(times),
        source=source,
        source_offset=line_numbers,
        payload=payloads,
    )


def parse_aggtrades(raw: RawBatch, **options):
    return parse_binance(raw, AGG_TRADES, **options)


def parse_trades(raw: RawBatch, **options):
    return parse_binance(raw, TRADES, **options)
