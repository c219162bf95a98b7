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
        tables.append(
            make_trade_batch(
                exchange="binance",
                symbol=symbol,
                trade_id=np.arange(1, k + 1).astype(str),
                price=prices,
                amount=amounts,
                side=np.where(rng.random(k) < 0.5, "buy", "sell"),
                event_time=times,
                source="synthetic",
            )
        )
    return pa.concat_tables(tables).select(TRADE_FIELDS)


def write_synthetic_parquet(path: str, n: int, symbols: list[str], days: float = 1.0) -> None:
    pq.write_table(synthetic_trades(n, symbols, days), path, compression="zstd")


# Venues whose (exchange, symbol) the shipped instruments table maps to one pair, BTC/USD once
# USDT counts as USD, as the consolidated benchmark runs them.
CONSOLIDATED_VENUES = (("binance", "BTCUSDT"), ("coinbase", "BTC-USD"), ("kraken", "XBTUSD"))
DRIFTING_VENUE = "kraken"
DRIFT = 0.008
"""How far the drifting venue's prices stray for a while: well within the 2 % that excludes a venue."""
DRIFT_MICROS = (14 * 3_600_000_000, 14 * 3_600_000_000 + 20 * 60_000_000)  # 14:00 to 14:20 UTC


def synthetic_venue_trades(n_per_venue: int, seed: int = 11) -> dict[str, pa.Table]:
    """One day of one pair on each of CONSOLIDATED_VENUES: every venue trades around a shared
    random walk (one step a second) with its own small noise, and DRIFTING_VENUE trades DRIFT
    higher for twenty minutes. Prices are cents, amounts decimal to 6 places, ids consecutive."""
    rng = np.random.default_rng(seed)
    seconds = DAY_MICROS // 1_000_000
    walk = 42_000 * np.exp(np.cumsum(rng.normal(0, 1e-4, seconds)))
    venues = {}
    for exchange, symbol in CONSOLIDATED_VENUES:
        offset = np.sort(rng.integers(0, DAY_MICROS, n_per_venue))
        level = walk[offset // 1_000_000] * (1 + rng.normal(0, 1e-4, n_per_venue))
        if exchange == DRIFTING_VENUE:
            level *= np.where((offset >= DRIFT_MICROS[0]) & (offset < DRIFT_MICROS[1]), 1 + DRIFT, 1.0)
        amounts = np.round(rng.lognormal(-3, 1.5, n_per_venue), 6) + 1e-6
        venues[exchange] = make_trade_batch(
            exchange=exchange,
            symbol=symbol,
            trade_id=np.arange(1, n_per_venue + 1).astype(str),
            price=np.round(level, 2),
            amount=amounts,
            side=np.where(rng.random(n_per_venue) < 0.5, "buy", "sell"),
            event_time=START_MICROS + offset,
            source="synthetic",
        ).select(TRADE_FIELDS)
    return venues


def write_synthetic_venues_parquet(directory: str, n_per_venue: int) -> list[str]:
    """synthetic_venue_trades as one Parquet file per venue, named by venue and day; returns the paths."""
    paths = []
    for exchange, table in synthetic_venue_trades(n_per_venue).items():
        paths.append(f"{directory}/{exchange}-2024-01-01.parquet")
        pq.write_table(table, paths[-1], compression="zstd")
    return paths
