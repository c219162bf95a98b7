"""Synthetic trades for benchmarks: random walks per symbol, written in the normalized schema."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from transforms.trade_batch import TRADE_FIELDS, make_trade_batch

DAY_MICROS = 86_400_000_000
START_MICROS = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z


def synthetic_trades(n: int, symbols: list[str], days: float = 1.0, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    per_symbol = np.array_split(np.arange(n), len(symbols))
    tables = []
    for symbol, rows in zip(symbols, per_symbol):
        k = len(rows)
        times = np.sort(rng.integers(START_MICROS, START_MICROS + int(days * DAY_MICROS), k))
        prices = np.round(100 * np.exp(np.cumsum(rng.normal(0, 2e-4, k))), 4)
        amounts = np.round(rng.lognormal(0, 1, k), 6) + 1e-6
        tables.append(make_trade_batch(
            exchange="binance", symbol=symbol, trade_id=np.arange(1, k + 1).astype(str), price=prices, amount=amounts,
            side=np.where(rng.random(k) < 0.5, "buy", "sell"), event_time=times, source="synthetic"))
    return pa.concat_tables(tables).select(TRADE_FIELDS)


def write_synthetic_parquet(path: str, n: int, symbols: list[str], days: float = 1.0) -> None:
    pq.write_table(synthetic_trades(n, symbols, days), path, compression="zstd")
