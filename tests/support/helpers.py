"""Shared test helpers: build trades, run TradesToBars, and an independent duckdb reference."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from io_connectors.formats.normalized import parse_normalized
from io_connectors.raw_batch import RawBatch
from transforms.trade_batch import TRADE_FIELDS, make_trade_batch

T0 = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z in microseconds
MINUTE = 60_000_000


def trades_table(rows: list[dict]) -> pa.Table:
    """rows: dicts with symbol, trade_id, price, amount, side, event_time (us); exchange defaults to binance."""
    table = make_trade_batch(
        exchange=[r.get("exchange", "binance") for r in rows],
        symbol=[r["symbol"] for r in rows],
        trade_id=[str(r["trade_id"]) for r in rows],
        price=[r["price"] for r in rows],
        amount=[r["amount"] for r in rows],
        side=[r.get("side", "buy") for r in rows],
        event_time=[r["event_time"] for r in rows],
        source="test",
    )
    return table.select(TRADE_FIELDS)


def raw_batch(rows: list[dict], first_row: int = 1, source: str = "test") -> RawBatch:
    return RawBatch(source=source, table=trades_table(rows), first_row=first_row)


def parse(raw):
    return parse_normalized(raw)


def reference_bars(rows: list[dict], interval_us: int = MINUTE) -> list[dict]:
    """Bars computed by duckdb SQL, deduplicated on (exchange, symbol, trade_id): the independent oracle."""
    if not rows:
        return []
    table = trades_table(rows)
    con = duckdb.connect()
    con.register("trades", table)
    first_seen = "row_number() OVER (PARTITION BY exchange, symbol, trade_id ORDER BY event_time)"
    cursor = con.execute(f"""
        WITH unique_trades AS (
            SELECT * FROM (SELECT *, {first_seen} AS n
                           FROM trades) WHERE n = 1),
        t AS (SELECT *, epoch_us(event_time) AS us FROM unique_trades)
        SELECT exchange, symbol, (us // {interval_us}) * {interval_us} AS window_start,
               arg_min(price, (us, length(trade_id), trade_id)) AS open, max(price) AS high, min(price) AS low,
               arg_max(price, (us, length(trade_id), trade_id)) AS close,
               sum(amount) AS volume, sum(price * amount) AS quote_volume, count(*) AS trade_count,
               coalesce(sum(amount) FILTER (WHERE side = 'buy'), 0) AS buy_volume,
               coalesce(sum(amount) FILTER (WHERE side = 'sell'), 0) AS sell_volume,
               arg_min(trade_id, (us, length(trade_id), trade_id)) AS first_trade_id,
               arg_max(trade_id, (us, length(trade_id), trade_id)) AS last_trade_id
        FROM t GROUP BY ALL ORDER BY exchange, symbol, window_start""")
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def trades_to_parquet(rows: list[dict], path, row_group_size: int) -> None:
    """Trades as a normalized Parquet file holds them: those columns of the trade schema that the
    rows have, in its order and with its types (event times in UTC microseconds)."""
    import pyarrow.parquet as pq

    from schemas import arrow_schema

    columns = [pa.field(field.name, field.type) for field in arrow_schema("trade") if field.name in rows[0]]
    pq.write_table(pa.Table.from_pylist(rows, pa.schema(columns)), path, row_group_size=row_group_size)


def bar_key(bar: dict):
    return bar["exchange"], bar["symbol"], bar["window_start"]


# Outputs collected in-process (the in-process runner and the direct runner run DoFns here).
COLLECTED: dict[str, list] = {}


def collect_into(name: str):
    COLLECTED[name] = []

    def collect(item, name=name):
        COLLECTED[name].append(item)

    return collect


class Collect:
    """A picklable sink that appends to COLLECTED[name] in this process."""

    def __init__(self, name: str):
        self.name = name
        COLLECTED[name] = []

    def __call__(self, item):
        COLLECTED.setdefault(self.name, []).append(item)


def run_trades_to_bars(raw_batches, spec, parser=parse):
    """Run TradesToBars on the in-process runner; return (bars, dead letters, counters)."""
    import apache_beam as beam

    from beam_pipelines.accounting import counters_of
    from runners.profiles import in_process_runner
    from transforms.trades_to_bars import TradesToBars

    pipeline = beam.Pipeline(runner=in_process_runner())
    results = pipeline | beam.Create(raw_batches, reshuffle=False) | TradesToBars(spec, parser)
    results["bars"] | "CollectBars" >> beam.Map(Collect("bars"))
    results["dead_letters"] | "CollectDead" >> beam.Map(Collect("dead"))
    result = pipeline.run()
    result.wait_until_finish()
    return list(COLLECTED["bars"]), list(COLLECTED["dead"]), counters_of(result)


# --- three venues of one pair, each in its own exchange's file format (consolidated bars) ---


def micros_of(moment) -> int:
    """A timezone-aware datetime as integer microseconds since the epoch."""
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def three_venue_trades(seed: int, start, seconds: int, drift: tuple, steps: tuple, amounts: tuple) -> dict:
    """(time, price, amount) per venue (binance, coinbase, kraken) from ``start`` for ``seconds``,
    a trade every one of ``steps`` seconds around one level; Kraken 5 % high within ``drift``."""
    import random
    from datetime import timedelta

    rng = random.Random(seed)
    venues = {}
    for venue in ("binance", "coinbase", "kraken"):
        trades, second = [], 0.0
        while second < seconds:
            second += rng.choice(steps)
            moment = start + timedelta(seconds=second)
            level = 42000.0 * (1.05 if venue == "kraken" and drift[0] <= moment < drift[1] else 1.0)
            trades.append((moment, round(level + rng.choice([-2.5, 0.0, 1.25, 3.0]), 2), rng.choice(amounts)))
        venues[venue] = trades
    return venues


CONSOLIDATED_BESIDE_TIME_BARS = ("--bars", "time:1m", "--bars", "consolidated:1m", "--quote-equivalent", "USDT=USD")
"""Options of a run of the three venues: one-minute time bars, and consolidated bars of the pair
with Tether counted as dollars."""


def write_three_venue_inputs(folder, venues: dict, days=("2024-01-01", "2024-01-02")) -> list[str]:
    """Each venue's daily files in its own format (Binance aggTrades CSV, Coinbase JSON lines,
    Kraken CSV); ids run on across days, as Binance's and Coinbase's do. Returns the ``--input``
    options naming each source."""
    import json

    for day in days:
        rows = {
            v: [(i, *t) for i, t in enumerate(trades) if t[0].date().isoformat() == day] for v, trades in venues.items()
        }
        for venue in venues:
            (folder / venue).mkdir(parents=True, exist_ok=True)
        (folder / "binance" / f"BTCUSDT-aggTrades-{day}.csv").write_text(
            "".join(
                f"{7000 + i},{p},{a},{7000 + i},{7000 + i},{micros_of(t) // 1000},false,true\n"
                for i, t, p, a in rows["binance"]
            )
        )
        (folder / "coinbase" / f"BTC-USD_{day}.jsonl").write_text(
            "".join(
                json.dumps(
                    {
                        "time": t.isoformat().replace("+00:00", "Z"),
                        "trade_id": 10**6 + i,
                        "price": str(p),
                        "size": str(a),
                        "side": "sell",
                    }
                )
                + "\n"
                for i, t, p, a in rows["coinbase"]
            )
        )
        (folder / "kraken" / f"XBTUSD_{day}.csv").write_text(
            "".join(f"{micros_of(t) / 1e6:.6f},{p},{a}\n" for _i, t, p, a in rows["kraken"])
        )
    return [
        "--input",
        f"binance-aggtrades:{folder}/binance/*.csv",
        "--input",
        f"coinbase-trades:{folder}/coinbase/*.jsonl",
        "--input",
        f"kraken-trades:{folder}/kraken/*.csv",
    ]
